"""Dynamics services: face detection, animator, encoder and gateway, plus cross-cutting code."""

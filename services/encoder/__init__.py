"""Encoder service: paste-back and FFmpeg H.264/AAC encoding, streamed (CPU)."""

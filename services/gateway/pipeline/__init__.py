"""Orchestration of one job across face_detect, animator and encoder: the orchestrator and its
stages, the typed gRPC clients, streams between calls, progress, the animation options' proto
mapping, FFmpeg media handling and the motion-template cache. It knows nothing of HTTP or of
the job queue: it may import `delivery`, `net`, `domain`, `config` and `metrics`.
"""

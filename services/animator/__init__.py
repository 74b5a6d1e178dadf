"""Animator service: the LivePortrait networks, batched, served over gRPC (GPU)."""

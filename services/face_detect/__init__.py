"""Face detection service: finds and tracks faces and computes LivePortrait crops (CPU)."""

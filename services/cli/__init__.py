"""Local-only tools: the `dynamics` command (`render`, `up` and the other subcommands), the
loopback stack that starts the three gRPC services for them, and the demo and synthetic media
that the CLI, the tests and the benchmarks make. It may import every service; no service
imports it.
"""

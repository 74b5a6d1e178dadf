"""Untrusted input at the byte level: strict parsers for numbers, JSON, media types and byte
ranges; the SSRF-safe media fetcher with its address policy; the IP-pinned HTTP(S) connections
that fetching and webhooks share. It may import `domain`, `config`, `metrics` and
`services.common` only.
"""

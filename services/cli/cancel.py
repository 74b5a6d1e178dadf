"""`dynamics cancel`: see services/cli/gateway_client.py (exit codes in `dynamics cancel --help`)."""

from services.cli.gateway_client import cancel_main as main
from services.cli.gateway_client import cancel_parser as build_parser

__all__ = ["build_parser", "main"]

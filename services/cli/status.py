"""`dynamics status`: see services/cli/gateway_client.py (exit codes in `dynamics status --help`)."""

from services.cli.gateway_client import status_main as main
from services.cli.gateway_client import status_parser as build_parser

__all__ = ["build_parser", "main"]

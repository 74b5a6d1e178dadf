"""`dynamics submit`: see services/cli/gateway_client.py (exit codes in `dynamics submit --help`)."""

from services.cli.gateway_client import submit_main as main
from services.cli.gateway_client import submit_parser as build_parser

__all__ = ["build_parser", "main"]

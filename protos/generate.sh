#!/usr/bin/env bash
# The only way the Python stubs are made. Run from anywhere; writes next to the .proto files.
set -euo pipefail
cd "$(dirname "$0")"
python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. --pyi_out=. dynamics/v1/*.proto

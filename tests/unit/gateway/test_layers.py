"""Imports run one way: down the gateway's layers, from a service only to itself and
services/common, never from a service into another service or into the local tools. The REST
client (services/client) imports nothing of the project and only httpx besides the standard
library, so integrators can take it alone; of the project only the local tools import it.

Every module's imports are read with `ast` (function-level and TYPE_CHECKING imports included),
so the check needs nothing installed and runs in the default test run.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SERVICES = ROOT / "services"

# The gateway's layers, top to bottom: a module may import its own layer and the ones below.
GATEWAY_LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("composition root", ("services.gateway.__main__", "services.gateway.runtime")),
    ("api", ("services.gateway.api",)),
    ("jobs", ("services.gateway.jobs",)),
    ("pipeline", ("services.gateway.pipeline",)),
    ("delivery", ("services.gateway.delivery",)),
    ("net", ("services.gateway.net",)),
    ("domain", ("services.gateway.domain",)),
    ("settings", ("services.gateway.config", "services.gateway.metrics")),
)
SERVICE_NAMES = ("face_detect", "animator", "encoder", "gateway")
COMMON = "services.common"
LOCAL_TOOLS = "services.cli"  # imports every service; no service imports it
CLIENT = "services.client"  # stdlib + httpx only; imported by the local tools alone
CLIENT_THIRD_PARTY = frozenset({"httpx"})


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def read_modules(root: Path = SERVICES) -> dict[str, tuple[Path, ast.Module]]:
    """Every module under `root`: dotted name -> (file, parsed source)."""
    return {
        module_name(p): (p, ast.parse(p.read_text(), str(p))) for p in sorted(root.rglob("*.py"))
    }


def imports(name: str, path: Path, tree: ast.Module, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported module) for every import in `tree`; `from pkg import mod` names the
    submodule when it is one, and relative imports are resolved against `name`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if sub in known else base))
    return found


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def gateway_layer(module: str) -> int | None:
    """Index of `module`'s layer in GATEWAY_LAYERS (0 is the top); None outside the gateway."""
    for rank, (_name, prefixes) in enumerate(GATEWAY_LAYERS):
        if any(_within(module, prefix) for prefix in prefixes):
            return rank
    return None


def service_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "services" else None


def violations(modules: dict[str, tuple[Path, ast.Module]]) -> list[str]:
    """Every import that breaks a rule, as `file:line: importer -> imported (why)`."""
    known = set(modules)
    found: list[str] = []
    for name, (path, tree) in modules.items():
        where = f"{path.relative_to(ROOT)}"
        own_service = service_of(name)
        for line, target in imports(name, path, tree, known):
            if own_service == "client" and service_of(target) is None:
                top = target.partition(".")[0]
                if top not in sys.stdlib_module_names and top not in CLIENT_THIRD_PARTY:
                    found.append(
                        f"{where}:{line}: {name} -> {target} "
                        "(the client imports only the standard library and httpx)"
                    )
                continue
            if service_of(target) is None:
                continue  # third-party, standard library, generated stubs
            target_service = service_of(target)
            edge = f"{where}:{line}: {name} -> {target}"
            if own_service == "client" and target_service != "client":
                found.append(f"{edge} (the client imports nothing of the project)")
            elif _within(target, CLIENT) and own_service not in ("cli", "client"):
                found.append(f"{edge} (only the local tools import the client)")
            elif own_service == "common" and target_service != "common":
                found.append(f"{edge} (services/common imports no service)")
            elif _within(target, LOCAL_TOOLS) and own_service != "cli":
                found.append(f"{edge} (no service imports the local tools)")
            elif (
                own_service in SERVICE_NAMES
                and target_service in SERVICE_NAMES
                and target_service != own_service
            ):
                found.append(f"{edge} (a service imports only itself and services/common)")
            elif (
                own_service == "gateway"
                and target_service == "gateway"
                and name != "services.gateway"
            ):
                mine, theirs = gateway_layer(name), gateway_layer(target)
                if theirs is None:
                    found.append(f"{edge} (imports a gateway module that is in no layer)")
                elif mine is not None and theirs < mine:
                    found.append(
                        f"{edge} ({GATEWAY_LAYERS[mine][0]} may not import the layer above it, "
                        f"{GATEWAY_LAYERS[theirs][0]})"
                    )
    return found


@pytest.fixture(scope="module")
def modules() -> dict[str, tuple[Path, ast.Module]]:
    return read_modules()


def test_imports_run_one_way(modules) -> None:
    found = violations(modules)
    assert not found, "\n".join(found)


def test_every_gateway_module_is_in_a_layer(modules) -> None:
    unplaced = [
        name
        for name in modules
        if _within(name, "services.gateway")
        and name != "services.gateway"
        and gateway_layer(name) is None
    ]
    assert not unplaced, f"add these to GATEWAY_LAYERS: {unplaced}"


def test_the_gateway_package_root_imports_nothing_of_its_own(modules) -> None:
    path, tree = modules["services.gateway"]
    assert not [
        t for _, t in imports("services.gateway", path, tree, set(modules)) if service_of(t)
    ], "services/gateway/__init__.py should only describe the layers"


def test_every_layer_package_says_what_it_is(modules) -> None:
    for name, (_path, tree) in modules.items():
        if (_within(name, "services.gateway") or _within(name, LOCAL_TOOLS)) and (
            _path.name == "__init__.py"
        ):
            assert (ast.get_docstring(tree) or "").strip(), f"{name} has no docstring"


@pytest.mark.parametrize(
    ("importer", "line", "why"),
    [
        (
            "services.gateway.domain",
            "from services.gateway.api.errors import ApiError",
            "layer above",
        ),
        ("services.gateway.net.fetch", "import services.gateway.runtime", "layer above"),
        ("services.gateway.pipeline.stages", "from services.gateway import runtime", "layer above"),
        ("services.gateway.config", "from services.gateway.metrics import GatewayMetrics", None),
        ("services.gateway.delivery.notify", "from ..jobs import worker", "layer above"),
        ("services.encoder.servicer", "from services.animator import weights", "only itself"),
        ("services.common.media", "from services.gateway.domain import JobSpec", "no service"),
        ("services.gateway.runtime", "from services.cli import local_stack", "local tools"),
        ("services.gateway.pipeline.media", "from services.gateway.helpers import x", "no layer"),
        ("services.client.client", "from services.common.cli import EXIT_OK", "nothing of"),
        ("services.client.client", "import requests", "standard library and httpx"),
        ("services.client.client", "from services.gateway.api import schemas", "nothing of"),
        ("services.gateway.api.routes", "from services.client import Job", "only the local"),
        ("services.client.client", "import urllib.parse", None),
        ("services.cli.gateway_client", "from services.client import Client", None),
    ],
)
def test_the_check_sees_a_bad_import(modules, importer: str, line: str, why: str | None) -> None:
    path, tree = modules[importer]
    planted = ast.parse(line + "\n" + ast.unparse(tree), str(path))
    found = violations({**modules, importer: (path, planted)})
    if why is None:
        assert not found, found
    else:
        assert len(found) == 1 and why in found[0] and importer in found[0], found

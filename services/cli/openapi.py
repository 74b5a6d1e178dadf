"""The gateway's committed API contract: write `docs/openapi.json` from the app, check that it
matches, and list the breaking changes between two versions of it.

    python -m services.cli.openapi                       # (re)write docs/openapi.json
    python -m services.cli.openapi --check               # exit 1 when the file is stale
    python -m services.cli.openapi --breaking-against docs/openapi.baseline.json
    python -m services.cli.openapi --breaking-against git:origin/main

The document is built from the real app (`Gateway.build` with throwaway local settings), so it
is exactly what `/openapi.json` serves; it is written with sorted keys and a final newline, so
the same code always writes the same bytes.

`breaking_changes(old, new)` walks two OpenAPI 3.1 documents and names what an existing client
would trip over: removed paths and operations, removed success responses, request bodies,
parameters and fields that became required (or new required ones), request values narrowed
(types, enums, bounds, patterns, fields no longer accepted), and response fields removed or no
longer always present, or response values widened (a new type such as null, new enum values,
looser bounds) that a client's decoder may not expect.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "docs" / "openapi.json"
BASELINE_PATH = ROOT / "docs" / "openapi.baseline.json"
SPEC_IN_REPO = "docs/openapi.json"
REGENERATE = "python -m services.cli.openapi"

_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
_LOWER = (("minimum", False), ("exclusiveMinimum", True))
_UPPER = (("maximum", False), ("exclusiveMaximum", True))
_SIZE_LOWER = ("minLength", "minItems", "minProperties")
_SIZE_UPPER = ("maxLength", "maxItems", "maxProperties")


# ------------------------------------------------------------------------ generation --


def document() -> dict[str, Any]:
    """The gateway app's OpenAPI document."""
    from services.gateway.config import GatewayConfig
    from services.gateway.runtime import Gateway

    with tempfile.TemporaryDirectory(prefix="openapi-") as tmp:
        config = GatewayConfig(data_dir=Path(tmp), auth_mode="none", workers=0)
        gateway = Gateway.build(config, None)
        try:
            return gateway.app.openapi()
        finally:
            gateway.close()


def render(spec: dict[str, Any]) -> str:
    return json.dumps(spec, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def git_spec(ref: str, path: str = SPEC_IN_REPO) -> dict[str, Any] | None:
    """The document committed at `ref`, or None when git, the ref or the file is missing (a
    tarball, a shallow clone without that commit, the commit that first adds the file)."""
    try:
        shown = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{ref}:{path}"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if shown.returncode != 0:
        return None
    return json.loads(shown.stdout)


# ----------------------------------------------------------------- breaking changes --


class _Walk:
    def __init__(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.specs = {"old": old, "new": new}
        self.found: list[str] = []
        self._seen: set[tuple[int, int, str]] = set()

    def flag(self, where: str, what: str) -> None:
        self.found.append(f"{where}: {what}")

    def resolve(self, side: str, node: Any) -> Any:
        """Follow local `$ref`s (siblings of a `$ref` are kept, as 3.1 allows)."""
        hops = 0
        while isinstance(node, dict) and isinstance(node.get("$ref"), str) and hops < 32:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                return {k: v for k, v in node.items() if k != "$ref"}
            target: Any = self.specs[side]
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                target = target.get(part, {}) if isinstance(target, dict) else {}
            extra = {k: v for k, v in node.items() if k != "$ref"}
            node = {**target, **extra} if extra else target
            hops += 1
        return node

    # -- operations --

    def paths(self) -> None:
        old_paths = self.specs["old"].get("paths", {})
        new_paths = self.specs["new"].get("paths", {})
        for path, old_item in sorted(old_paths.items()):
            if path not in new_paths:
                self.flag(path, "path removed")
                continue
            new_item = new_paths[path]
            for method in _METHODS:
                if method not in old_item:
                    continue
                where = f"{method.upper()} {path}"
                if method not in new_item:
                    self.flag(where, "operation removed")
                    continue
                self.operation(where, old_item, new_item, method)

    def _parameters(self, side: str, item: dict, operation: dict) -> dict[tuple[str, str], dict]:
        found: dict[tuple[str, str], dict] = {}
        for raw in [*item.get("parameters", []), *operation.get("parameters", [])]:
            param = self.resolve(side, raw)
            found[(param.get("in", ""), param.get("name", ""))] = param
        return found

    def operation(self, where: str, old_item: dict, new_item: dict, method: str) -> None:
        old_op, new_op = old_item[method], new_item[method]
        old_params = self._parameters("old", old_item, old_op)
        new_params = self._parameters("new", new_item, new_op)
        for key, param in sorted(new_params.items()):
            label = f"{key[0]} parameter {key[1]!r}"
            before = old_params.get(key)
            if param.get("required") and not (before and before.get("required")):
                self.flag(where, f"{label} is now required")
        for key, before in sorted(old_params.items()):
            label = f"{key[0]} parameter {key[1]!r}"
            if key not in new_params:
                self.flag(where, f"{label} removed")
                continue
            self.schema(
                f"{where} {label}",
                before.get("schema", {}),
                new_params[key].get("schema", {}),
                "request",
            )
        self.request_body(where, old_op, new_op)
        self.responses(where, old_op, new_op)

    def request_body(self, where: str, old_op: dict, new_op: dict) -> None:
        old_body = self.resolve("old", old_op.get("requestBody"))
        new_body = self.resolve("new", new_op.get("requestBody"))
        if not new_body:
            return
        if new_body.get("required") and not (old_body and old_body.get("required")):
            self.flag(where, "request body is now required")
        if not old_body:
            return
        new_content = new_body.get("content", {})
        for media, old_media in sorted(old_body.get("content", {}).items()):
            if media not in new_content:
                self.flag(where, f"request media type {media} no longer accepted")
                continue
            self.schema(
                f"{where} request {media}",
                old_media.get("schema", {}),
                new_content[media].get("schema", {}),
                "request",
            )

    def responses(self, where: str, old_op: dict, new_op: dict) -> None:
        new_responses = new_op.get("responses", {})
        for status, old_raw in sorted(old_op.get("responses", {}).items()):
            success = str(status)[:1] in ("2", "3")
            if status not in new_responses:
                if success:
                    self.flag(where, f"response {status} removed")
                continue
            old_resp = self.resolve("old", old_raw)
            new_resp = self.resolve("new", new_responses[status])
            new_content = new_resp.get("content", {})
            for media, old_media in sorted(old_resp.get("content", {}).items()):
                if media not in new_content:
                    self.flag(where, f"response {status} {media} removed")
                    continue
                self.schema(
                    f"{where} response {status}",
                    old_media.get("schema", {}),
                    new_content[media].get("schema", {}),
                    "response",
                )

    # -- schemas --

    def _branches(self, side: str, schema: Any) -> list[dict]:
        """The alternatives a value may match (anyOf/oneOf flattened, allOf merged)."""
        schema = self.resolve(side, schema)
        if not isinstance(schema, dict):
            return [{}]
        if "allOf" in schema:
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                part = self.resolve(side, part)
                for key, value in part.items():
                    if key == "properties":
                        merged["properties"] = {**merged.get("properties", {}), **value}
                    elif key == "required":
                        merged["required"] = sorted({*merged.get("required", []), *value})
                    else:
                        merged.setdefault(key, value)
            schema = merged
        for key in ("anyOf", "oneOf"):
            if key in schema:
                base = {k: v for k, v in schema.items() if k not in (key, "description", "title")}
                branches: list[dict] = []
                for option in schema[key]:
                    for branch in self._branches(side, option):
                        branches.append({**base, **branch})
                return branches
        return [schema]

    @staticmethod
    def _types(branch: dict) -> set[str]:
        kind = branch.get("type")
        if isinstance(kind, str):
            return {kind}
        if isinstance(kind, list):
            return set(kind)
        if "properties" in branch or "additionalProperties" in branch:
            return {"object"}
        if "items" in branch:
            return {"array"}
        values = branch.get("enum", [branch["const"]] if "const" in branch else None)
        if values is not None:
            names = {bool: "boolean", int: "integer", float: "number", str: "string"}
            return {names.get(type(v), "null" if v is None else "object") for v in values}
        return {"any"}

    @staticmethod
    def _covers(kinds: set[str], kind: str) -> bool:
        return kind in kinds or "any" in kinds or (kind == "integer" and "number" in kinds)

    def schema(self, where: str, old: Any, new: Any, direction: str) -> None:
        """Request: the new schema must accept all the old one did. Response: the new schema
        must produce nothing the old one could not, and keep every field."""
        old_branches, new_branches = self._branches("old", old), self._branches("new", new)
        key = (id(old), id(new), direction)
        if key in self._seen:
            return
        self._seen.add(key)
        by_type_old = {t: b for b in old_branches for t in sorted(self._types(b))}
        by_type_new = {t: b for b in new_branches for t in sorted(self._types(b))}
        old_types, new_types = set(by_type_old), set(by_type_new)
        if direction == "request":
            lost = sorted(t for t in old_types if not self._covers(new_types, t))
            if lost:
                self.flag(where, f"no longer accepts {', '.join(lost)}")
        else:
            gained = sorted(t for t in new_types if not self._covers(old_types, t))
            if gained:
                self.flag(where, f"may now be {', '.join(gained)}")
        for kind in sorted(old_types & new_types):
            self._same_type(where, by_type_old[kind], by_type_new[kind], direction)

    def _same_type(self, where: str, old: dict, new: dict, direction: str) -> None:
        # `wide` must accept all that `narrow` does; a change that makes `narrow` stricter is
        # breaking (request: old is wide; response: new is wide, so the old bounds held).
        wide, narrow = (old, new) if direction == "request" else (new, old)
        changed = "narrowed" if direction == "request" else "widened"
        self._enum(where, wide, narrow, changed)
        self._bounds(where, wide, narrow, changed)
        if wide.get("pattern") != narrow.get("pattern") and narrow.get("pattern") is not None:
            self.flag(where, f"pattern {changed}: {old.get('pattern')!r} -> {new.get('pattern')!r}")
        if "properties" in old or "properties" in new:
            self._object(where, old, new, direction)
        if "items" in old and "items" in new:
            self.schema(f"{where}[]", old["items"], new["items"], direction)

    def _enum(self, where: str, wide: dict, narrow: dict, changed: str) -> None:
        def values(branch: dict) -> list | None:
            if "enum" in branch:
                return list(branch["enum"])
            return [branch["const"]] if "const" in branch else None

        wide_values, narrow_values = values(wide), values(narrow)
        if narrow_values is None:
            return
        if wide_values is None:
            self.flag(where, f"enum {changed}: now only {narrow_values}")
            return
        missing = [v for v in wide_values if v not in narrow_values]
        if missing:
            self.flag(
                where,
                f"enum {changed}: {missing} "
                + ("no longer accepted" if changed == "narrowed" else "may now be sent"),
            )

    def _bounds(self, where: str, wide: dict, narrow: dict, changed: str) -> None:
        def bound(branch: dict, names, pick) -> tuple[float, bool] | None:
            found = [
                (branch[n], exclusive)
                for n, exclusive in names
                if isinstance(branch.get(n), (int, float))
            ]
            return pick(found) if found else None

        def report(what: str, wide_value: object, narrow_value: object) -> None:
            # Shown as old -> new: old is the wide side of a request, the narrow side of a
            # response.
            old, new = (
                (wide_value, narrow_value) if changed == "narrowed" else (narrow_value, wide_value)
            )
            self.flag(where, f"{what} {changed}: {old} -> {new}")

        low = (bound(wide, _LOWER, _tightest_low), bound(narrow, _LOWER, _tightest_low))
        if low[1] is not None and (low[0] is None or _stricter_low(low[1], low[0])):
            report("lower bound", _show(low[0]), _show(low[1]))
        high = (bound(wide, _UPPER, _tightest_high), bound(narrow, _UPPER, _tightest_high))
        if high[1] is not None and (high[0] is None or _stricter_high(high[1], high[0])):
            report("upper bound", _show(high[0]), _show(high[1]))
        for name in _SIZE_LOWER:
            if narrow.get(name, 0) > wide.get(name, 0):
                report(name, wide.get(name), narrow.get(name))
        for name in _SIZE_UPPER:
            if name in narrow and narrow[name] < wide.get(name, float("inf")):
                report(name, wide.get(name), narrow.get(name))

    def _object(self, where: str, old: dict, new: dict, direction: str) -> None:
        old_props, new_props = old.get("properties", {}), new.get("properties", {})
        old_required, new_required = set(old.get("required", [])), set(new.get("required", []))
        if direction == "request":
            for name in sorted(new_required - old_required):
                self.flag(where, f"field {name!r} is now required")
            closed = new.get("additionalProperties") is False
            for name in sorted(set(old_props) - set(new_props)):
                if closed:
                    self.flag(where, f"field {name!r} is no longer accepted")
            if closed and old.get("additionalProperties") is not False:
                self.flag(where, "unknown fields are no longer accepted")
        else:
            for name in sorted(set(old_props) - set(new_props)):
                self.flag(where, f"field {name!r} removed")
            for name in sorted((old_required - new_required) & set(new_props)):
                self.flag(where, f"field {name!r} may now be absent")
        for name in sorted(set(old_props) & set(new_props)):
            self.schema(f"{where}.{name}", old_props[name], new_props[name], direction)


def _tightest_low(found: list[tuple[float, bool]]) -> tuple[float, bool]:
    return max(found, key=lambda b: (b[0], b[1]))


def _tightest_high(found: list[tuple[float, bool]]) -> tuple[float, bool]:
    return min(found, key=lambda b: (b[0], not b[1]))


def _stricter_low(a: tuple[float, bool], b: tuple[float, bool]) -> bool:
    return a[0] > b[0] or (a[0] == b[0] and a[1] and not b[1])


def _stricter_high(a: tuple[float, bool], b: tuple[float, bool]) -> bool:
    return a[0] < b[0] or (a[0] == b[0] and a[1] and not b[1])


def _show(bound: tuple[float, bool] | None) -> str:
    if bound is None:
        return "none"
    return f"{'exclusive ' if bound[1] else ''}{bound[0]:g}"


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What an existing client of `old` would trip over in `new`, one line each."""
    walk = _Walk(old, new)
    walk.paths()
    return walk.found


# ----------------------------------------------------------------------------- main --


def _load(source: str) -> dict[str, Any] | None:
    if source.startswith("git:"):
        return git_spec(source[4:])
    return json.loads(Path(source).read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.cli.openapi", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when docs/openapi.json is stale"
    )
    parser.add_argument(
        "--breaking-against",
        metavar="FILE|git:REF",
        help="list breaking changes from that version to the app's; exit 1 if any",
    )
    parser.add_argument("--output", type=Path, default=SPEC_PATH)
    args = parser.parse_args(argv)
    text = render(document())
    status = 0
    if args.breaking_against:
        old = _load(args.breaking_against)
        if old is None:
            print(f"{args.breaking_against}: no such document; nothing to compare", file=sys.stderr)
        else:
            found = breaking_changes(old, json.loads(text))
            for line in found:
                print(f"breaking: {line}")
            status = 1 if found else 0
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale; regenerate it with: {REGENERATE}", file=sys.stderr)
            status = 1
    elif not args.breaking_against:
        args.output.write_text(text)
        print(f"wrote {args.output}")
    return status


if __name__ == "__main__":
    sys.exit(main())

"""The PromQL expressions our dashboards and alert rules use, and the metric names inside them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = REPO_ROOT / "helm" / "dynamics" / "dashboards"
RULES_FILE = REPO_ROOT / "deploy" / "prometheus" / "rules.yml"

# Grafana variables -> values that make a dashboard query plain PromQL.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$namespace": ".*",
    "$gpu_price_per_hour": "0.60",
}

_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
    "atan2",
}
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.:])[A-Za-z_:][A-Za-z0-9_:]*")


def substitute_grafana(expr: str) -> str:
    """Replace the dashboard's Grafana variables with concrete values."""
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    return expr


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (e.g. `dynamics_stage_seconds_bucket`).

    Label matchers, range and grouping clauses, strings, function calls and keywords are
    dropped first, so only selectors remain. Recording-rule names (with a colon) are kept.
    """
    text = substitute_grafana(expr)
    text = _STRING.sub('""', text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        token = match.group(0)
        if token.lower() in _KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(token)
    return names


def dashboard_exprs(directory: Path = DASHBOARD_DIR) -> Iterator[tuple[str, str]]:
    """`(where, expr)` for every query of every dashboard panel and templating variable."""
    for path in sorted(directory.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard.get("panels", []):
            for target in panel.get("targets", []):
                yield f"{path.name}: {panel['title']}", target["expr"]
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                query = variable["query"]
                query = query["query"] if isinstance(query, dict) else query
                inner = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
                yield f"{path.name}: ${variable['name']}", inner.group(1) if inner else query


def rule_exprs(path: Path = RULES_FILE) -> Iterator[tuple[str, str]]:
    """`(alert or record name, expr)` for every rule of a Prometheus rules file."""
    for group in yaml.safe_load(path.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule.get("record"), rule["expr"]


def used_metric_names() -> dict[str, set[str]]:
    """Metric name -> the panels and rules that use it (recording-rule outputs excluded)."""
    used: dict[str, set[str]] = {}
    for where, expr in [*dashboard_exprs(), *rule_exprs()]:
        for name in metric_names(expr):
            if ":" not in name:
                used.setdefault(name, set()).add(where)
    return used

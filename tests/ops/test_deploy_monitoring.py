"""The dashboard and the alert rules ask only for metrics that are served: every PromQL expression in
``deploy/grafana`` and ``deploy/prometheus`` is parsed for the metric names it reads, and each must be one a worker's
registry serves (counters with ``_total``, histograms' ``_bucket``/``_count``/``_sum``), one the exporter serves, or a
recording rule of the rules file."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from pipeline.ops.exporter import EXPORTER_METRICS
from pipeline.ops.metrics import METRIC_NAMES, worker_metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
_STRIP = (r'"(?:[^"\\]|\\.)*"', r"\{[^}]*\}", r"\[[^\]]*\]",
          r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords, label lists and durations left out)."""
    for pattern in _STRIP:
        expr = re.sub(pattern, " ", expr)
    names = set()
    for found in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        following = expr[found.end():].lstrip()
        if found.group() in _KEYWORDS or following.startswith("("):
            continue
        if found.start() > 0 and (expr[found.start() - 1].isdigit() or expr[found.start() - 1] == "."):
            continue  # the exponent or unit of a number, e.g. 1e3
        names.add(found.group())
    return names


def served_by_workers() -> set[str]:
    """The sample names a worker's registry serves, from the metric objects themselves."""
    served = set()
    for metric in vars(worker_metrics()).values():
        for family in metric.describe():
            if family.type == "counter":
                served.add(family.name + "_total")
            elif family.type == "histogram":
                served.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
            else:
                served.add(family.name)
    return served


def _dashboard_exprs() -> list[str]:
    exprs = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            exprs += [target["expr"] for target in panel.get("targets", [])]
    return exprs


def _rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_the_workers_serve_what_metrics_py_documents() -> None:
    assert served_by_workers() == set(
        name for name in METRIC_NAMES if not name.endswith("_seconds")) | {
        name + suffix for name in METRIC_NAMES if name.endswith("_seconds") for suffix in ("_bucket", "_count", "_sum")}


def test_every_dashboard_query_names_a_served_metric() -> None:
    served = served_by_workers() | set(EXPORTER_METRICS)
    exprs = _dashboard_exprs()
    assert len(exprs) >= 10
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        assert names <= served, f"{expr}: {names - served} is served by nobody"


def test_every_alert_names_a_served_metric_or_a_recording_rule() -> None:
    rules = _rules()
    recorded = {rule["record"] for rule in rules if "record" in rule}
    served = served_by_workers() | set(EXPORTER_METRICS) | recorded
    alerts = {rule["alert"]: rule for rule in rules if "alert" in rule}
    wanted = {"StsNoWorkerAlive", "StsFailureRatioHigh", "StsCreditsOverBudget", "StsCapSaturatedQueueGrowing"}
    assert wanted <= set(alerts)
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names <= served, f"{rule}: {names - served} is served by nobody"
    assert alerts["StsFailureRatioHigh"]["for"] == "10m" and "0.10" in alerts["StsFailureRatioHigh"]["expr"]


def test_the_parser_sees_through_promql() -> None:
    expr = ('histogram_quantile(0.9, sum by (le, queue) (rate(sts_a_bucket{state!="x",b=~"y|z"}[15m]))) '
            '/ on () group_left sts:b > 1e3 and sts_c offset 5m')
    assert metric_names(expr) == {"sts_a_bucket", "sts:b", "sts_c"}

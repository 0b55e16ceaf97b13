"""The PrometheusRule and the Grafana dashboard: every expression parses, and every metric it names is one the code exports.

The exported names are read from prometheus_client's registry after importing every stage's code (as a pod
would), so a renamed or removed metric fails here rather than as an alert that never fires.
"""

from __future__ import annotations

import json

import promql_parser
import pytest
import yaml
from prometheus_client import REGISTRY

from schemas.stages import ALL_STAGES
from tests.k8s.manifests import generator, of_kind, render

GEN = generator()
SAMPLE_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"), "gauge": ("",)}


@pytest.fixture(scope="module")
def exported() -> set[str]:
    for stage in ALL_STAGES:
        stage.load()  # registers the stage's own metrics beside runtime.metrics'
    return {family.name + suffix for family in REGISTRY.collect() for suffix in SAMPLE_SUFFIXES.get(family.type, ("",))}


def rule_expressions() -> dict[str, str]:
    (rule,) = [d for d in yaml.safe_load_all(GEN.RULES_FILE.read_text()) if d]
    return {r["alert"]: r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]}


def dashboard_expressions() -> dict[str, str]:
    board = json.loads(GEN.DASHBOARD_FILE.read_text())
    return {f"{p['title']}/{t['refId']}": t["expr"] for p in board["panels"] for t in p["targets"]}


def metric_names(expr: str) -> set[str]:
    names = set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name or next(m.value for m in node.matchers.matchers if m.name == "__name__"))
        elif isinstance(node, promql_parser.MatrixSelector):
            visit(node.vector_selector)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def test_the_alerts_the_issue_names_exist():
    alerts = set(rule_expressions())
    assert {"VigilLagGrowing", "VigilDeadLetters", "VigilCameraDown", "VigilEventAgeHigh", "VigilStageNotReady"} <= alerts
    assert {f"VigilStageAbsent{s.name.capitalize()}" for s in ALL_STAGES} <= alerts


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_expression_parses_and_names_exported_metrics(source, exported):
    expressions = rule_expressions() if source == "rules" else dashboard_expressions()
    assert expressions
    for where, expr in expressions.items():
        names = metric_names(expr)  # raises ValueError on a syntax error
        assert names, f"{where}: names no metric"
        assert names <= exported, f"{where}: {sorted(names - exported)} is exported by no stage"


def test_the_parser_catches_a_bad_expression_and_an_unknown_metric(exported):
    with pytest.raises(ValueError):
        metric_names("sum(rate(vigil_events_in_total[5m])")
    assert metric_names("rate(vigil_events_inn_total[5m])") - exported == {"vigil_events_inn_total"}


def test_the_rendered_rule_and_dashboard_are_the_generated_ones():
    docs = render("overlays/production")
    (rule,) = of_kind(docs, "PrometheusRule")
    assert {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]} == set(rule_expressions())
    (board,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    panels = json.loads(board["data"]["vigil.json"])["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert json.loads(board["data"]["vigil.json"]) == json.loads(GEN.DASHBOARD_FILE.read_text())

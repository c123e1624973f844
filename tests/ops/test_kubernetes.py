"""deploy/kubernetes validates offline and keeps the promises the issue makes about shutdown, probes and scaling.

Core kinds are validated against the Kubernetes JSON schemas (``kubernetes-validate``, strict: an unknown field is an
error). KEDA's ScaledObject and the Prometheus Operator's ServiceMonitor are CRDs the schemas do not know: their
required fields, and what they point at, are checked here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from pipeline.api.response import request_deadline_s
from pipeline.config import Settings
from pipeline.formats import MAX_INPUT_BYTES, MAX_INPUT_SECONDS
from pipeline.ops.exporter import EXPORTER_METRICS
from tests.ops.test_deploy_monitoring import metric_names

BASE = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "base"
CRDS = {"ScaledObject", "ServiceMonitor"}


def _docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(BASE.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in _docs() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def _container(deployment: str) -> dict[str, Any]:
    return _one("Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in BASE.glob("*.yaml")
                                                        if p.name != "kustomization.yaml")


@pytest.mark.parametrize("doc", [d for d in _docs() if d["kind"] not in CRDS],
                         ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_core_manifests_validate_against_the_kubernetes_schemas(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, latest_version(), strict=True)


def test_a_wrong_manifest_does_not_validate() -> None:
    broken = _one("Deployment", "sts-worker")
    broken["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, latest_version(), strict=True)


def test_grace_period_outlasts_the_soft_shutdown_which_outlasts_the_longest_request() -> None:
    config = _one("ConfigMap")["data"]
    longest_segment_s = min(float(config["STS_MAX_SEGMENT_SECONDS"]), MAX_INPUT_SECONDS)
    longest_request_s = request_deadline_s(longest_segment_s, MAX_INPUT_BYTES)
    soft_s = float(config["STS_SOFT_SHUTDOWN_TIMEOUT_S"])
    grace_s = _one("Deployment", "sts-worker")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace_s > soft_s > longest_request_s
    assert config["REMAP_SIGTERM"] == "SIGQUIT"  # SIGTERM starts the soft shutdown, not an unbounded warm one
    assert Settings(soft_shutdown_timeout_s=soft_s).soft_shutdown_timeout_s == soft_s


def test_worker_probes_read_the_heartbeat_file_and_never_ping_celery() -> None:
    worker = _container("sts-worker")
    heartbeat = _one("ConfigMap")["data"]["STS_HEARTBEAT_FILE"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = " ".join(worker[probe]["exec"]["command"])
        assert heartbeat in command and "celery" not in command and "python" not in command
    mounts = {m["mountPath"] for m in worker["volumeMounts"]}
    assert any(heartbeat.startswith(m + "/") for m in mounts)  # writable under a read-only root filesystem
    assert {"secretRef": {"name": "sts-pipeline"}} in worker["envFrom"]
    assert _one("Secret")["metadata"]["name"] == "sts-pipeline"


def test_keda_scales_the_workers_on_the_depth_that_counts_reserved_work() -> None:
    scaled = _one("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == _one("Deployment", "sts-worker")["metadata"]["name"]
    assert spec["cooldownPeriod"] >= 600
    scale_down = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert scale_down["stabilizationWindowSeconds"] >= 300
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    meta = trigger["metadata"]
    assert {"serverAddress", "query", "threshold"} <= set(meta) and float(meta["threshold"]) > 0
    assert metric_names(meta["query"]) == {"sts_queue_depth"} <= set(EXPORTER_METRICS)


def test_the_service_monitor_selects_services_with_a_metrics_port() -> None:
    monitor = _one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    selected = [d for d in _docs() if d["kind"] == "Service"
                and selector.items() <= d["metadata"].get("labels", {}).items()]
    assert {d["metadata"]["name"] for d in selected} == {"sts-exporter", "sts-worker-metrics"}
    for service in selected:
        assert ports <= {p["name"] for p in service["spec"]["ports"]}
    worker_port = int(_one("ConfigMap")["data"]["STS_METRICS_PORT"])
    assert worker_port in {p["containerPort"] for p in _container("sts-worker")["ports"]}

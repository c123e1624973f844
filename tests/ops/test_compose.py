"""docker-compose's operations services fit together (``docker compose config`` needs Docker; this reads the YAML):
Prometheus scrapes the ports the exporter and the workers serve, Grafana's provisioning finds the dashboard, and every
file or volume they mount exists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    return [(v.split(":")[0], v.split(":")[1]) for v in service.get("volumes", [])]


def test_the_operations_services_and_their_volumes_exist() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"exporter", "prometheus", "grafana"} <= set(services)
    for name in ("prometheus", "grafana"):
        for source, _ in _mounts(services[name]):
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"
            else:
                assert source in compose["volumes"], f"{name} uses volume {source}, which is not declared"
    assert services["exporter"]["command"][0] == "metrics"


def test_prometheus_scrapes_what_the_exporter_and_the_workers_serve() -> None:
    services = _compose()["services"]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    exporter_port = int(services["exporter"]["command"][services["exporter"]["command"].index("--port") + 1])
    assert jobs["sts-exporter"]["static_configs"][0]["targets"] == [f"exporter:{exporter_port}"]
    (workers,) = jobs["sts-worker"]["dns_sd_configs"]
    assert workers["names"] == ["worker"]
    assert workers["port"] == int(services["worker"]["environment"]["STS_METRICS_PORT"])
    mounted = {target for _, target in _mounts(services["prometheus"])}
    assert set(config["rule_files"]) <= mounted


def test_grafana_provisions_the_dashboard_from_where_it_is_mounted() -> None:
    grafana = _compose()["services"]["grafana"]
    mounts = dict(_mounts(grafana))
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/sts-pipeline.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert mounts["./deploy/grafana/dashboards"] == path
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert (ROOT / "deploy/grafana/dashboards/sts-pipeline.json").exists()

"""Alerting rules (promtool), and that every metric the rules and the dashboard query is really exported.

promtool comes with Debian's `prometheus` package; without it those tests skip (CI may not have it).
The metric check runs the real stack (scripted backend) and scrapes what it exports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import eventually
from tests.helpers.exported import live_stack
from tests.test_deploy import dashboard_exprs

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "deploy" / "k8s" / "monitoring"
RULES = MONITORING / "rules" / "conclave-rules.yaml"
RULE_TESTS = MONITORING / "rules" / "conclave-rules.test.yaml"
PROMETHEUS_RULE = MONITORING / "operator" / "prometheusrule.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "conclave.json"
README = ROOT / "deploy" / "README.md"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(not PROMTOOL, reason="promtool is not installed (Debian: apt-get install prometheus)")

# Series that come from other exporters, not from Conclave's code: prometheus-nats-exporter (-varz -jsz=all,
# the NATS pods' sidecar) and vLLM's own /metrics. Named here so a typo cannot hide among them.
EXTERNAL = {
    "jetstream_consumer_num_pending", "jetstream_consumer_num_ack_pending", "jetstream_consumer_num_redelivered",
    "jetstream_consumer_delivered_consumer_seq", "jetstream_stream_total_messages", "jetstream_stream_total_bytes",
    "gnatsd_varz_connections", "gnatsd_varz_in_msgs", "gnatsd_varz_out_msgs",
    "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc", "vllm:generation_tokens_total", "vllm:prompt_tokens_total",
    "vllm:e2e_request_latency_seconds_bucket", "vllm:time_to_first_token_seconds_bucket",
}
METRIC = re.compile(r"\b((?:conclave|jetstream|gnatsd)_[a-z0-9_]+|vllm:[a-z0-9_:]+)")


def rule_docs() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def metrics_in(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in METRIC.findall(e)}


@needs_promtool
def test_rules_pass_promtool_check() -> None:
    proc = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_rules_fire_on_recorded_series() -> None:
    proc = subprocess.run([PROMTOOL, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_unit_test_and_a_runbook() -> None:
    tested = {t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for t in case["alert_rule_test"]}
    readme = README.read_text()
    for rule in rule_docs():
        name = rule["alert"]
        assert name in tested, f"{name} has no case in {RULE_TESTS.name}"
        assert f"#### {name}" in readme, f"{name} has no runbook entry in deploy/README.md"
        assert rule["annotations"]["runbook"] == f"deploy/README.md#{name.lower()}"


def test_the_prometheusrule_is_rendered_from_the_rule_file() -> None:
    sys.path.insert(0, str(RULES.parent))
    try:
        import render_prometheusrule
    finally:
        sys.path.pop(0)
    assert PROMETHEUS_RULE.read_text() == render_prometheusrule.render(), \
        "run python deploy/k8s/monitoring/rules/render_prometheusrule.py"


@pytest.mark.asyncio
async def test_rules_and_dashboard_query_only_metrics_that_exist(nats_server, tmp_path) -> None:
    async with live_stack(nats_server, tmp_path) as stack:
        await stack.work()
        exported = await stack.exported_names()
    for what, used in (("rules", metrics_in([r["expr"] for r in rule_docs()])),
                       ("dashboard", metrics_in(dashboard_exprs(json.loads(DASHBOARD.read_text()))))):
        assert used, what
        ours = {m for m in used if m.startswith("conclave_")}
        assert not ours - exported, f"the {what} query metrics no service exports: {sorted(ours - exported)}"
        assert not (used - ours) - EXTERNAL, f"the {what} query unknown external metrics: {sorted((used - ours) - EXTERNAL)}"


PROMETHEUS = shutil.which("prometheus")


def grafana_to_promql(expr: str) -> str:
    """A dashboard query as Grafana sends it, for the live test's namespace and every service."""
    return (expr.replace("$namespace", "conclave").replace("$service", ".*")
            .replace("$__rate_interval", "1m").replace("$__range", "5m"))


@pytest.mark.asyncio
@pytest.mark.skipif(not PROMETHEUS, reason="prometheus is not installed (Debian: apt-get install prometheus)")
async def test_every_dashboard_query_returns_data_from_a_live_stack(nats_server, tmp_path) -> None:
    import asyncio

    import httpx

    from services.stack.natsd import free_port

    exprs = [e for e in dashboard_exprs(json.loads(DASHBOARD.read_text()))
             if not any(m.startswith(("vllm:", "jetstream_")) for m in METRIC.findall(e))]
    async with live_stack(nats_server, tmp_path) as stack:
        scrape = [{"targets": [f"127.0.0.1:{port}" for port in ports],
                   "labels": {"namespace": "conclave", "service": name}} for name, ports in stack.targets.items()]
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s"},
                                          "scrape_configs": [{"job_name": "conclave", "static_configs": scrape}]}))
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        prom = await asyncio.create_subprocess_exec(
            PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}", stdout=log, stderr=log)
        api = f"http://127.0.0.1:{port}/api/v1/query"
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                async def ready() -> bool:
                    # Prometheus answers 503 to queries until its TSDB is open; /-/ready says when.
                    try:
                        return (await http.get(f"http://127.0.0.1:{port}/-/ready")).status_code == 200
                    except httpx.HTTPError:
                        return False

                async def query(q: str) -> list:
                    response = await http.get(api, params={"query": q})
                    assert response.status_code == 200, (q, response.status_code, response.text)
                    body = response.json()
                    assert body["status"] == "success", (q, body)
                    return body["data"]["result"]

                await eventually(ready, timeout=60, interval=0.2)
                targets = sum(len(p) for p in stack.targets.values())
                await eventually(lambda: _count_up(query, targets), timeout=60)
                await stack.work()
                empty: list[str] = exprs
                for _ in range(60):  # until every query has data, or a minute of scrapes
                    await asyncio.sleep(1)
                    empty = [e for e in empty if not await query(grafana_to_promql(e))]
                    if not empty:
                        break
        finally:
            prom.terminate()
            await prom.wait()
            log.close()
    assert not empty, f"dashboard queries without data: {empty}"


async def _count_up(query, targets: int) -> bool:
    result = await query("sum(up)")
    return bool(result) and float(result[0]["value"][1]) >= targets

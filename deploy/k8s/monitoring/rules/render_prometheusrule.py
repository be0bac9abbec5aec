"""Writes deploy/k8s/monitoring/operator/prometheusrule.yaml from conclave-rules.yaml (the plain rule file).

Run after editing the rules: python deploy/k8s/monitoring/rules/render_prometheusrule.py
(tests/test_alerts.py fails while the two differ).
"""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "conclave-rules.yaml"
TARGET = HERE.parent / "operator" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/k8s/monitoring/rules/conclave-rules.yaml by render_prometheusrule.py next to it:
# edit the rule file, then re-run the script. Add the label your Prometheus selects rules by
# (kube-prometheus-stack: release: <its release name>, unless ruleSelectorNilUsesHelmValues=false).
"""


def render() -> str:
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "conclave", "labels": {"app.kubernetes.io/part-of": "conclave"}},
        "spec": yaml.safe_load(SOURCE.read_text()),
    }
    return HEADER + yaml.safe_dump(rule, sort_keys=False, width=1000)


if __name__ == "__main__":
    TARGET.write_text(render())
    print(f"wrote {TARGET}")

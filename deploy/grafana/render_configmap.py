"""Writes deploy/k8s/monitoring/grafana-dashboard.yaml from deploy/grafana/conclave.json.

Run after editing the dashboard: python deploy/grafana/render_configmap.py
(tests/test_deploy.py fails while the two differ).
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "conclave.json"
TARGET = HERE.parent / "k8s" / "monitoring" / "grafana-dashboard.yaml"

HEADER = """\
# GENERATED from deploy/grafana/conclave.json by deploy/grafana/render_configmap.py: edit the JSON, then
# re-run the script. Label grafana_dashboard: "1" is what the Grafana sidecar looks for; plain Grafana
# mounts it at /var/lib/grafana/dashboards/conclave (grafana-provisioning.yaml).
apiVersion: v1
kind: ConfigMap
metadata:
  name: conclave-grafana-dashboard
  labels:
    grafana_dashboard: "1"
    app.kubernetes.io/name: grafana
    app.kubernetes.io/part-of: conclave
  annotations:
    grafana_folder: Conclave
data:
  conclave.json: |
"""


def render() -> str:
    text = json.dumps(json.loads(SOURCE.read_text()), indent=2)
    return HEADER + "".join(f"    {line}\n" for line in text.splitlines())


if __name__ == "__main__":
    TARGET.write_text(render())
    print(f"wrote {TARGET}")

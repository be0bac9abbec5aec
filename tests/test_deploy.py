"""deploy/: Kubernetes manifests, kustomizations and the Grafana dashboard. Fast, no cluster.

Checks that every YAML file parses, that every service has a Deployment that probes, drains and is bounded,
that the pieces that must be special are (headless model Service, locked-down executor), that kustomizations
only name files that exist (and render, when kubectl is installed), and that the dashboard only queries
metrics listed here. The objects checked are the ones kustomize renders: the role Deployments exist only as
a shared body plus a stub per role, so the tests that read them are skipped where kustomize is not installed.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
BASE = K8S / "base"
OVERLAYS = {"gpu": K8S / "overlays" / "gpu", "cpu": K8S / "overlays" / "cpu"}
DASHBOARD = DEPLOY / "grafana" / "conclave.json"

IMAGE = "ghcr.io/conclave/conclave:0.1.0"
CONFIGMAP = "conclave-config"
METRICS_PORT = 9090
GATEWAY_PORT = 50051
# The gateway's plaintext health-only port: the kubelet's gRPC probe cannot speak TLS.
GATEWAY_HEALTH_PORT = 50052

# Every long-running service `conclave serve NAME` runs; each needs a Deployment in deploy/k8s/base.
EXPECTED = {"intake", "inference", "ceo", "recruiter", "solver", "critic", "executor", "evaluator", "single",
            "archiver", "openai-door"}

# The metrics the Grafana dashboard may query, as Prometheus stores them (prometheus_client appends _total
# to counters; histograms are queried through _bucket). Add a name here only together with the code that
# exports it.
DASHBOARD_METRICS = {
    # services/runtime/lifecycle.py
    "conclave_service_ready",
    # services/intake/service.py (labels: outcome, encoding)
    "conclave_problems_submitted_total",
    # services/runtime/worker.py (labels: consumer, outcome)
    "conclave_messages_total",
    "conclave_messages_in_flight",
    "conclave_message_seconds_bucket",
    # services/bus/deadletter.py (labels: stream, code)
    "conclave_dead_letters_total",
    # ceo/metrics.py
    "conclave_ceo_decisions_total",
    "conclave_problem_seconds_bucket",
    "conclave_problems_active",
    "conclave_problems_finished_total",
    # ceo/metrics.py and services/agents/service.py (label: role)
    "conclave_parse_fallbacks_total",
    # the inference gateway (services/inference/)
    "conclave_inference_ttft_seconds_bucket",
    "conclave_inference_completion_tokens_total",
    "conclave_inference_in_flight",
    "conclave_inference_queue_depth",
    "conclave_inference_pod_healthy",
    "conclave_inference_rejections_total",
    "conclave_inference_prompt_tokens_total",
    "conclave_inference_requests_total",
    "conclave_inference_request_seconds_bucket",
    "conclave_inference_retries_total",
    "conclave_inference_ejections_total",
    # ceo/metrics.py: the CEO's team and budget choices, consensus
    "conclave_ceo_team_size_bucket",
    "conclave_ceo_budget_tokens_bucket",
    "conclave_problems_consensus_total",
}
# Series of other exporters the dashboard shows: vLLM's /metrics and the NATS pods' prometheus-nats-exporter.
# tests/test_observability.py checks these names against its list of external metrics.
DASHBOARD_EXTERNAL_PREFIXES = ("vllm:", "jetstream_")
# What the dashboard must show (each needs at least one panel).
DASHBOARD_REQUIRED = DASHBOARD_METRICS - {"conclave_problems_active", "conclave_problems_finished_total"}


# --- loading ------------------------------------------------------------------------------------------------

def load_docs(path: Path) -> list[Any]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def kustomization(kdir: Path) -> dict[str, Any]:
    (doc,) = load_docs(kdir / "kustomization.yaml")
    return doc


def resource_files(kdir: Path) -> list[Path]:
    """Full manifests a kustomization includes, following directory resources (not patches). Missing
    entries are left to test_kustomizations_reference_existing_files."""
    files: list[Path] = []
    for entry in kustomization(kdir).get("resources", []):
        target = (kdir / entry).resolve()
        if target.is_dir() and (target / "kustomization.yaml").is_file():
            files.extend(resource_files(target))
        elif target.is_file():
            files.append(target)
    return files


KUBECTL = shutil.which("kubectl")
KUSTOMIZE = shutil.which("kustomize")
# The role Deployments are one base plus a patch each (deploy/k8s/base/roles/): only kustomize's own engine
# makes them whole, so the tests that read them need it and are skipped without it.
RENDERS = bool(KUBECTL or KUSTOMIZE)
needs_kustomize = pytest.mark.skipif(not RENDERS, reason="neither kubectl nor kustomize is installed: the role "
                                     "Deployments are rendered from deploy/k8s/base/roles by kustomize")


def kustomize_build(kdir: Path) -> list[dict[str, Any]]:
    cmd = [KUSTOMIZE, "build", str(kdir)] if KUSTOMIZE else [KUBECTL, "kustomize", str(kdir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stderr[-2000:]}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@functools.cache
def _rendered(kdir: Path) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize_build(kdir))


def objects(kdir: Path) -> list[dict[str, Any]]:
    """What the kustomization renders; without kustomize, the manifests it names (role Deployments are stubs)."""
    if RENDERS:
        return copy.deepcopy(list(_rendered(kdir)))
    return [d for f in resource_files(kdir) for d in load_docs(f)]


def by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o.get("kind") == kind}


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return workload["spec"]["template"]["spec"]["containers"]


def drain_grace_s() -> float:
    cm = by_kind(objects(BASE), "ConfigMap")[CONFIGMAP]
    return float(cm["data"]["CONCLAVE_DRAIN_GRACE_S"])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A NetworkPolicy podSelector: {} selects every pod; matchLabels and `In` matchExpressions must all hold."""
    ok = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", f"unsupported operator in {expr}"
        ok = ok and labels.get(expr["key"]) in expr["values"]
    return ok


def env_of(container: dict[str, Any]) -> dict[str, str]:
    """Literal env values (entries set from a Secret are in secret_env_of)."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def secret_env_of(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}


BASE_OBJECTS = objects(BASE)
# The role Deployments: deploy/k8s/base/roles/<name>/ (a stub) + roles/role/ (the body every role shares).
ROLES = {Path(e).name for e in kustomization(BASE)["resources"] if e.startswith("roles/")}


def names(candidates: Any) -> list[Any]:
    """Parameters for a per-service test: a role's only where kustomize can make its Deployment whole."""
    return [pytest.param(n, marks=needs_kustomize) if n in ROLES else n for n in sorted(candidates)]

BASE_DEPLOYMENTS = by_kind(BASE_OBJECTS, "Deployment")
ALL_DEPLOYMENTS = {**{n: d for o in OVERLAYS.values() for n, d in by_kind(objects(o), "Deployment").items()},
                   **BASE_DEPLOYMENTS}


# --- every file ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.y*ml")), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    docs = load_docs(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
        if path.name != "kustomization.yaml" and "kind" in doc:
            assert doc.get("apiVersion") and doc.get("metadata", {}).get("name"), f"{path}: {doc.get('kind')}"
        # YAML embedded in ConfigMaps (Prometheus and Grafana configuration) must parse too.
        if doc.get("kind") == "ConfigMap":
            for key, value in (doc.get("data") or {}).items():
                if key.endswith((".yml", ".yaml")):
                    assert isinstance(yaml.safe_load(value), dict), f"{path}: data.{key}"
                if key.endswith(".json"):
                    json.loads(value)


def test_kustomizations_reference_existing_files() -> None:
    referenced: set[Path] = set()
    for kdir in kustomization_dirs():
        k = kustomization(kdir)
        assert k.get("kind") in ("Kustomization", "Component"), kdir
        for entry in k.get("components", []):
            target = (kdir / entry).resolve()
            assert kustomization(target).get("kind") == "Component", f"{kdir}: component {entry} is not a Component"
        for entry in k.get("resources", []):
            target = (kdir / entry).resolve()
            assert target.exists(), f"{kdir}/kustomization.yaml: resource {entry} does not exist"
            if target.is_dir():
                assert (target / "kustomization.yaml").exists(), f"{kdir}: {entry} has no kustomization.yaml"
            referenced.add(target)
        for patch in k.get("patches", []):
            assert "path" in patch or "patch" in patch, f"{kdir}: patch without path or patch"
            if "path" in patch:
                target = (kdir / patch["path"]).resolve()
                assert target.is_file(), f"{kdir}/kustomization.yaml: patch {patch['path']} does not exist"
                referenced.add(target)
        for generator in k.get("configMapGenerator", []):
            for entry in generator.get("files", []):
                target = (kdir / entry.split("=")[-1]).resolve()
                assert target.is_file(), f"{kdir}/kustomization.yaml: configMapGenerator file {entry} does not exist"
                referenced.add(target)
    # No manifest is left out of every kustomization (promtool's *.test.yaml are tests, not manifests).
    for path in K8S.rglob("*.yaml"):
        if path.name != "kustomization.yaml" and not path.name.endswith(".test.yaml"):
            assert path.resolve() in referenced, f"{path.relative_to(DEPLOY)} is in no kustomization"
    # The top-level kustomization deploys the GPU overlay.
    top = {(K8S / e).resolve() for e in kustomization(K8S).get("resources", [])}
    assert OVERLAYS["gpu"].resolve() in top


@pytest.mark.skipif(not (KUBECTL or KUSTOMIZE), reason="neither kubectl nor kustomize is installed")
@pytest.mark.parametrize("kdir", [d for d in kustomization_dirs() if kustomization(d)["kind"] == "Kustomization"],
                         ids=lambda p: str(p.relative_to(K8S)) or ".")
def test_kustomization_builds(kdir: Path) -> None:
    rendered = kustomize_build(kdir)
    assert rendered
    for obj in rendered:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "conclave", f"{obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.skipif(not (KUBECTL or KUSTOMIZE), reason="neither kubectl nor kustomize is installed")
def test_overlays_render_their_model_pods() -> None:
    gpu = kustomize_build(OVERLAYS["gpu"])
    cpu = kustomize_build(OVERLAYS["cpu"])
    assert "vllm" in by_kind(gpu, "Deployment") and "llamacpp" not in by_kind(gpu, "Deployment")
    assert "llamacpp" in by_kind(cpu, "Deployment") and "vllm" not in by_kind(cpu, "Deployment")
    assert by_kind(gpu, "PersistentVolumeClaim")["conclave-archive"]["spec"]["accessModes"] == ["ReadWriteMany"]
    # Model pods are HTTP servers in both overlays: the gateway's `openai` backend (`vllm` is in-process).
    for rendered in (gpu, cpu):
        assert env_of(containers(by_kind(rendered, "Deployment")["inference"])[0])["CONCLAVE_BACKEND"] == "openai"
    # The laptop overlay runs one image, with the CPU extras, everywhere.
    for name, dep in by_kind(cpu, "Deployment").items():
        assert containers(dep)[0]["image"] == IMAGE + "-cpu", name
    # Every PodDisruptionBudget left must be satisfiable by its Deployment's replicas.
    deps = by_kind(cpu, "Deployment")
    for name, pdb in by_kind(cpu, "PodDisruptionBudget").items():
        if name in deps:
            assert deps[name]["spec"]["replicas"] > pdb["spec"].get("minAvailable", 0), name


# --- services -----------------------------------------------------------------------------------------------

def test_every_registered_service_has_a_manifest() -> None:
    from services.registry import SERVICES

    missing = set(SERVICES) - EXPECTED
    assert not missing, (f"services {sorted(missing)} are in services/registry.py but have no Deployment: add "
                         "deploy/k8s/base/<name>.yaml (args: [serve, <name>]), or a role in deploy/k8s/base/roles/<name>/, "
                         "and the name to EXPECTED")


@pytest.mark.parametrize("name", names(EXPECTED))
def test_service_has_a_deployment(name: str) -> None:
    assert name in BASE_DEPLOYMENTS, f"no Deployment {name} in deploy/k8s/base"
    dep = BASE_DEPLOYMENTS[name]
    (c,) = containers(dep)
    assert c["args"] == ["serve", name]
    assert "command" not in c, "the image's entrypoint is `conclave`"
    assert c["image"] == IMAGE
    assert {"configMapRef": {"name": CONFIGMAP}} in c.get("envFrom", [])
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert selects(dep["spec"]["selector"]["matchLabels"], labels)
    ann = dep["spec"]["template"]["metadata"].get("annotations", {})
    assert ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == str(METRICS_PORT)
    assert {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"} in c["ports"]
    ready, live = c["readinessProbe"], c["livenessProbe"]
    if name == "inference":
        assert ready == {**ready, "grpc": {"port": GATEWAY_HEALTH_PORT}}
        assert env_of(c)["CONCLAVE_GRPC_HEALTH_PORT"] == str(GATEWAY_HEALTH_PORT)
    else:
        assert ready["httpGet"] == {"path": "/readyz", "port": METRICS_PORT}
    assert live["httpGet"] == {"path": "/healthz", "port": METRICS_PORT}
    if name in {"ceo", "recruiter", "solver", "critic", "executor", "evaluator", "inference"}:
        assert dep["spec"]["replicas"] >= 2, f"{name}: one replica crash must not stop work"


@pytest.mark.parametrize("name", names(ALL_DEPLOYMENTS))
def test_deployment_probes_drains_and_is_bounded(name: str) -> None:
    spec = ALL_DEPLOYMENTS[name]["spec"]["template"]["spec"]
    assert spec.get("terminationGracePeriodSeconds", 30) > drain_grace_s(), \
        f"{name}: terminationGracePeriodSeconds must exceed CONCLAVE_DRAIN_GRACE_S"
    for c in spec["containers"]:
        assert c.get("readinessProbe") and c.get("livenessProbe"), f"{name}/{c['name']}: probes"
        limits, requests = c["resources"]["limits"], c["resources"]["requests"]
        assert {"cpu", "memory"} <= set(limits) and {"cpu", "memory"} <= set(requests), f"{name}/{c['name']}"


def _with_placeholder(node: Any, name: str) -> Any:
    """The rendered object with the role's own name written back as the shared body's placeholder."""
    if isinstance(node, dict):
        return {k: _with_placeholder(v, name) for k, v in node.items()}
    if isinstance(node, list):
        return [_with_placeholder(v, name) for v in node]
    return "role" if node == name else node


@needs_kustomize
def test_each_role_deployment_is_the_base_plus_its_name() -> None:
    """A role's directory names the role and its component and nothing else (the CEO adds its resources): every
    other line of the seven Deployments is the shared body, with no placeholder left behind."""
    (body,) = load_docs(BASE / "roles" / "role" / "deployment.yaml")
    assert ROLES == {"intake", "ceo", "recruiter", "solver", "critic", "evaluator", "single"}
    for name in ROLES:
        (stub,) = load_docs(BASE / "roles" / name / "deployment.yaml")
        assert set(stub) == {"apiVersion", "kind", "metadata"} and stub["metadata"]["name"] == name
        assert set(stub["metadata"]["labels"]) == {"app.kubernetes.io/component"}, name
        component = stub["metadata"]["labels"]["app.kubernetes.io/component"]
        dep = copy.deepcopy(BASE_DEPLOYMENTS[name])
        assert dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == component
        assert '"role"' not in json.dumps(dep), f"{name}: a placeholder of the body was not replaced"
        # Back to the body: the placeholder for the name, no component, no namespace or base-wide labels.
        dep = _with_placeholder(dep, name)
        meta, pod = dep["metadata"], dep["spec"]["template"]
        del meta["namespace"], meta["labels"]["app.kubernetes.io/component"], meta["labels"]["app.kubernetes.io/version"]
        pod["metadata"]["labels"]["app.kubernetes.io/component"] = "role"
        expected = copy.deepcopy(body)
        if name == "ceo":
            (c,) = containers(dep)
            assert c["resources"] != containers(body)[0]["resources"], "the CEO's patch sets its own resources"
            c["resources"] = containers(body)[0]["resources"]
        assert dep == expected, name


def test_configmap_settings() -> None:
    from services.runtime.settings import RuntimeSettings

    data = by_kind(BASE_OBJECTS, "ConfigMap")[CONFIGMAP]["data"]
    assert data["CONCLAVE_NATS_URL"] == "nats://nats:4222"
    assert data["CONCLAVE_METRICS_PORT"] == str(METRICS_PORT)
    assert data["CONCLAVE_METRICS_HOST"] == "0.0.0.0", "probes and Prometheus reach the pod IP"
    assert data["CONCLAVE_LOG_JSON"] == "true"
    assert drain_grace_s() == 25
    assert data["CONCLAVE_INFERENCE_ADDR"] == f"inference:{GATEWAY_PORT}"
    known = set(RuntimeSettings.model_fields) | {"inference_addr"}
    for key in data:
        assert key.startswith("CONCLAVE_") and key.removeprefix("CONCLAVE_").lower() in known, key


def test_nats_cluster() -> None:
    sts = by_kind(BASE_OBJECTS, "StatefulSet")["nats"]
    services = by_kind(BASE_OBJECTS, "Service")
    headless = services[sts["spec"]["serviceName"]]
    assert headless["spec"].get("clusterIP") == "None" and headless["spec"].get("publishNotReadyAddresses") is True
    client_ports = {p["port"] for p in services["nats"]["spec"]["ports"]}
    # Clients get the client port only; routes and KEDA's monitoring reads go through the headless Service.
    assert client_ports == {4222}
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert selects(services["nats"]["spec"]["selector"], labels) and selects(headless["spec"]["selector"], labels)
    assert sts["spec"]["volumeClaimTemplates"], "JetStream needs persistent storage"
    replicas = sts["spec"]["replicas"]
    expected_routes = {f"nats://nats-{i}.{headless['metadata']['name']}:6222" for i in range(replicas)}
    configs = [by_kind(BASE_OBJECTS, "ConfigMap")["nats-config"]["data"]["nats.conf"]]
    configs += [d["data"]["nats.conf"] for p in OVERLAYS["cpu"].glob("patch-*.yaml") for d in load_docs(p)
                if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "nats-config"]
    for conf in configs:
        assert set(re.findall(r"nats://nats-\d+\.[\w-]+:6222", conf)) == expected_routes
        assert "jetstream" in conf and "server_name: $SERVER_NAME" in conf


# --- inference ----------------------------------------------------------------------------------------------

@needs_kustomize
def test_inference_gateway_service_and_pods() -> None:
    services = by_kind(BASE_OBJECTS, "Service")
    gw = BASE_DEPLOYMENTS["inference"]
    gw_labels = gw["spec"]["template"]["metadata"]["labels"]
    svc = services["inference"]
    assert svc["spec"].get("type", "ClusterIP") == "ClusterIP" and selects(svc["spec"]["selector"], gw_labels)
    assert GATEWAY_PORT in {p["port"] for p in svc["spec"]["ports"]}

    pods = services["vllm-pods"]
    assert pods["spec"].get("clusterIP") == "None", "the gateway must resolve every model pod IP: headless Service"
    env = env_of(containers(gw)[0])
    host, _, port = env["CONCLAVE_PODS_DNS"].rpartition(":")
    assert host.split(".")[0] == "vllm-pods" and port == str(pods["spec"]["ports"][0]["port"]) == "8000"
    assert env["CONCLAVE_GRPC_PORT"] == str(GATEWAY_PORT)

    # Base has no model pods; each overlay brings exactly one kind, behind the headless Service.
    selector = pods["spec"]["selector"]
    assert not [n for n, d in BASE_DEPLOYMENTS.items() if selects(selector, d["spec"]["template"]["metadata"]["labels"])]
    for overlay, name in (("gpu", "vllm"), ("cpu", "llamacpp")):
        deps = by_kind(objects(OVERLAYS[overlay]), "Deployment")
        model = [n for n, d in deps.items() if selects(selector, d["spec"]["template"]["metadata"]["labels"])]
        assert model == [name], overlay
    (vllm,) = containers(by_kind(objects(OVERLAYS["gpu"]), "Deployment")["vllm"])
    assert vllm["image"].startswith("vllm/vllm-openai:")
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] >= 1
    assert {"--port", "8000", "--enable-prefix-caching"} <= set(vllm["args"])
    assert env_of(vllm).get("HF_HUB_OFFLINE") == "1", "the cluster may be offline: weights are pre-staged"
    # The gateway budgets with the context vLLM serves.
    patched = {k: v for p in OVERLAYS["gpu"].glob("patch-*.yaml") for d in load_docs(p) if d["kind"] == "Deployment"
               and d["metadata"]["name"] == "inference" for k, v in env_of(containers(d)[0]).items()}
    args = vllm["args"]
    assert patched["CONCLAVE_CONTEXT_LENGTH"] == args[args.index("--max-model-len") + 1]
    (llama,) = containers(by_kind(objects(OVERLAYS["cpu"]), "Deployment")["llamacpp"])
    assert llama["command"][:3] == ["python", "-m", "services.inference.pod_llamacpp"]


def test_gateway_env_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway's env (ConfigMap, Deployment, GPU overlay patch) loads into its settings class."""
    settings = pytest.importorskip("services.inference.settings")
    (c,) = containers(BASE_DEPLOYMENTS["inference"])
    env = {**by_kind(BASE_OBJECTS, "ConfigMap")[CONFIGMAP]["data"], **env_of(c)}
    for overlay_env in ({}, *(env_of(containers(d)[0]) for p in OVERLAYS["gpu"].glob("patch-*.yaml")
                              for d in load_docs(p) if d["kind"] == "Deployment")):
        for key, value in {**env, **overlay_env}.items():
            monkeypatch.setenv(key, value)
        s = settings.InferenceSettings()
        assert s.grpc_host == "0.0.0.0" and s.grpc_port == GATEWAY_PORT and s.metrics_port == METRICS_PORT
        assert s.backend == "openai" and s.pods_dns.startswith("vllm-pods.") and not s.pods
        known = set(settings.InferenceSettings.model_fields)
        for key in {**env, **overlay_env}:
            if key.startswith("CONCLAVE_") and key != "CONCLAVE_INFERENCE_ADDR":
                assert key.removeprefix("CONCLAVE_").lower() in known, f"{key} is not a gateway setting"


# --- executor -----------------------------------------------------------------------------------------------

def test_executor_is_locked_down() -> None:
    dep = BASE_DEPLOYMENTS["executor"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    assert csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True
    assert csc.get("runAsUser", psc.get("runAsUser", 0)) != 0
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc.get("privileged", False) is False
    assert csc["capabilities"]["drop"] == ["ALL"] and not csc["capabilities"].get("add")
    assert csc.get("seccompProfile", psc.get("seccompProfile")) == {"type": "RuntimeDefault"}
    assert pod.get("automountServiceAccountToken") is False
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    tmp = {m["name"] for m in c["volumeMounts"] if m["mountPath"] == "/tmp"}
    assert tmp and all("emptyDir" in v for v in pod["volumes"] if v["name"] in tmp)


def test_executor_network_policy() -> None:
    labels = BASE_DEPLOYMENTS["executor"]["spec"]["template"]["metadata"]["labels"]
    policies = [p for p in by_kind(BASE_OBJECTS, "NetworkPolicy").values()
                if pod_selector_matches(p["spec"]["podSelector"], labels)]
    assert policies, "the executor needs a NetworkPolicy"
    nats_labels = by_kind(BASE_OBJECTS, "StatefulSet")["nats"]["spec"]["template"]["metadata"]["labels"]
    gw_labels = BASE_DEPLOYMENTS["inference"]["spec"]["template"]["metadata"]["labels"]
    allowed: set[tuple[str, int]] = set()
    assert any("Egress" in p["spec"]["policyTypes"] for p in policies)
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            assert rule.get("to") and rule.get("ports"), "an egress rule without `to` or `ports` allows too much"
            for peer in rule["to"]:
                assert "ipBlock" not in peer
                pods = peer.get("podSelector", {}).get("matchLabels", {})
                assert "matchExpressions" not in peer.get("podSelector", {}), peer
                ns = peer.get("namespaceSelector", {}).get("matchLabels")
                if ns is not None:
                    assert ns == {"kubernetes.io/metadata.name": "kube-system"} and pods == {"k8s-app": "kube-dns"}
                    target = "dns"
                elif selects(pods, nats_labels):
                    target = "nats"
                elif selects(pods, gw_labels):
                    target = "inference"
                else:
                    raise AssertionError(f"egress to an unexpected peer: {peer}")
                allowed |= {(target, p["port"]) for p in rule["ports"]}
    # NATS and DNS; the gateway too, since the executor asks the model for tests when a problem has none.
    assert allowed <= {("nats", 4222), ("dns", 53), ("inference", GATEWAY_PORT)}, allowed
    assert {("nats", 4222), ("dns", 53)} <= allowed


# --- security (docs/security.md) ----------------------------------------------------------------------------

NATS_USERS_SECRET = "conclave-nats-users"


def test_nats_users_config_is_generated_from_the_permissions() -> None:
    from services.security.k8s import nats_auth_configmap

    assert (BASE / "nats-auth.yaml").read_text() == nats_auth_configmap(), \
        "regenerate: python -m services.security.k8s nats-auth > deploy/k8s/base/nats-auth.yaml"


def _nats_confs() -> dict[str, str]:
    confs = {"base": by_kind(BASE_OBJECTS, "ConfigMap")["nats-config"]["data"]["nats.conf"]}
    confs |= {f"cpu/{p.name}": d["data"]["nats.conf"] for p in OVERLAYS["cpu"].glob("patch-*.yaml")
              for d in load_docs(p) if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "nats-config"}
    return confs


@pytest.mark.parametrize("which", sorted(_nats_confs()))
def test_nats_config_requires_tls_and_users_and_nats_server_accepts_it(which: str, tmp_path: Path) -> None:
    """The real nats-server parses the config (`-t`), with the paths of the pod moved into a temp dir."""
    from services.bus import permissions
    from services.security.local import LocalSecurity
    from services.stack.natsd import find_binary

    conf = _nats_confs()[which]
    assert conf.count("tls {") == 2 and "verify: true" in conf, "clients and routes speak TLS"
    assert "include ./auth.conf" in conf
    sec = LocalSecurity.ensure(tmp_path / "sec")
    cert, key = sec.cert("nats-server")
    conf = (conf.replace("/etc/nats-tls/tls.crt", str(cert)).replace("/etc/nats-tls/tls.key", str(key))
            .replace("/etc/nats-tls/ca.crt", str(sec.ca_file)).replace("/data", str(tmp_path / "js"))
            .replace("/var/run/nats", str(tmp_path)))
    (tmp_path / "nats.conf").write_text(conf)
    (tmp_path / "auth.conf").write_text(by_kind(BASE_OBJECTS, "ConfigMap")["nats-auth"]["data"]["auth.conf"])
    env = {"SERVER_NAME": "nats-0", **{permissions.password_env(u): "pw" for u in permissions.USERS}}
    proc = subprocess.run([str(find_binary()), "-t", "-c", str(tmp_path / "nats.conf")], capture_output=True,
                          text=True, timeout=30, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_nats_reads_every_users_password_and_mounts_its_certificate() -> None:
    from services.bus import permissions

    sts = by_kind(BASE_OBJECTS, "StatefulSet")["nats"]
    c = next(c for c in containers(sts) if c["name"] == "nats")
    assert secret_env_of(c) == {permissions.password_env(u): (NATS_USERS_SECRET, u) for u in permissions.USERS}
    volumes = sts["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": "nats-tls"}} in volumes
    sources = next(v for v in volumes if v["name"] == "config")["projected"]["sources"]
    assert {s["configMap"]["name"] for s in sources} == {"nats-config", "nats-auth"}


@pytest.mark.parametrize("name", names(EXPECTED))
def test_each_service_logs_in_as_itself_over_tls(name: str) -> None:
    """Its own key of the users' Secret and no other; the client certificate that trusts the cluster CA."""
    (c,) = containers(BASE_DEPLOYMENTS[name])
    assert secret_env_of(c)["CONCLAVE_NATS_PASSWORD"] == (NATS_USERS_SECRET, name)
    assert [k for s, k in secret_env_of(c).values() if s == NATS_USERS_SECRET] == [name]
    assert "CONCLAVE_NATS_USER" not in env_of(c), "the user is the service's own name"
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in BASE_DEPLOYMENTS[name]["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts["/etc/conclave/tls"]]["secret"]["secretName"] == "conclave-client-tls"
    data = by_kind(BASE_OBJECTS, "ConfigMap")[CONFIGMAP]["data"]
    assert data["CONCLAVE_NATS_TLS_CA"] == data["CONCLAVE_GATEWAY_TLS_CA"] == "/etc/conclave/tls/ca.crt"


def test_gateway_serves_mtls_and_sends_the_pod_api_key() -> None:
    (c,) = containers(BASE_DEPLOYMENTS["inference"])
    env = env_of(c)
    assert env["CONCLAVE_GRPC_SERVER_CERT"].startswith("/etc/conclave/gateway-tls/")
    assert env["CONCLAVE_GRPC_CLIENT_CA"] == "/etc/conclave/gateway-tls/ca.crt", "mTLS"
    assert secret_env_of(c)["CONCLAVE_POD_API_KEY"] == ("conclave-pod-api-key", "api-key")
    (vllm,) = containers(by_kind(objects(OVERLAYS["gpu"]), "Deployment")["vllm"])
    assert secret_env_of(vllm)["VLLM_API_KEY"] == ("conclave-pod-api-key", "api-key")
    (llama,) = containers(by_kind(objects(OVERLAYS["cpu"]), "Deployment")["llamacpp"])
    assert "--api-key-file" in llama["command"]


@needs_kustomize
def test_cert_manager_issues_the_secrets_the_manifests_mount() -> None:
    from services.security.k8s import TLS_SECRETS

    certs = by_kind(objects(K8S / "tls"), "Certificate")
    for name, (_cn, hosts) in TLS_SECRETS.items():
        assert certs[name]["spec"]["secretName"] == name
        assert tuple(certs[name]["spec"].get("dnsNames", ())) == hosts
    mounted = {v["secret"]["secretName"] for o in BASE_OBJECTS if o.get("kind") in ("Deployment", "StatefulSet", "Job")
               for v in o["spec"]["template"]["spec"].get("volumes", []) if "secret" in v}
    assert mounted == set(TLS_SECRETS)


@needs_kustomize
def test_namespace_is_default_deny_and_every_pod_has_its_flows() -> None:
    policies = list(by_kind(BASE_OBJECTS, "NetworkPolicy").values())
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")
            and not p["spec"].get("egress")]
    assert deny and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    pods = {n: o["spec"]["template"]["metadata"]["labels"] for o in BASE_OBJECTS
            if o.get("kind") in ("Deployment", "StatefulSet", "Job") for n in [o["metadata"]["name"]]}
    for name, labels in pods.items():
        egress = [r for p in policies if pod_selector_matches(p["spec"]["podSelector"], labels)
                  for r in p["spec"].get("egress", [])]
        ports = {port["port"] for r in egress for port in r["ports"]}
        assert 53 in ports and (4222 in ports or 6222 in ports), f"{name}: no flow to DNS and NATS"
        for rule in egress:
            assert rule.get("to") and rule.get("ports"), f"{name}: an egress rule without `to` or `ports`"
    # The NATS route port is open to the NATS servers only.
    nats = by_kind(BASE_OBJECTS, "NetworkPolicy")["nats"]["spec"]["ingress"]
    route = [r for r in nats if any(p["port"] == 6222 for p in r["ports"])]
    assert [r["from"] for r in route] == [[{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "nats"}}}]]
# --- autoscaling, disruption budgets, NATS metrics ---------------------------------------------------------

AUTOSCALING = K8S / "autoscaling"


def test_every_worker_scales_on_its_jetstream_consumer() -> None:
    from services.bus import topology

    scaled = by_kind(objects(AUTOSCALING / "keda"), "ScaledObject")
    consumers = {"ceo": topology.CEO_CONSUMER, **topology.ROLE_CONSUMERS}
    assert set(scaled) == set(consumers)
    headless = by_kind(BASE_OBJECTS, "Service")["nats-headless"]
    monitor = next(p["port"] for p in headless["spec"]["ports"] if p["name"] == "monitor")
    pdbs = by_kind(BASE_OBJECTS, "PodDisruptionBudget")
    for name, obj in scaled.items():
        spec = obj["spec"]
        assert spec["scaleTargetRef"]["name"] == name and name in BASE_DEPLOYMENTS
        # Drains stay possible: more replicas than the PodDisruptionBudget keeps.
        assert pdbs[name]["spec"]["minAvailable"] < spec["minReplicaCount"] <= spec["maxReplicaCount"]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "nats-jetstream"
        meta = trigger["metadata"]
        assert (meta["stream"], meta["consumer"]) == (consumers[name].stream, consumers[name].durable)
        # Clustered JetStream: KEDA asks the consumer's leader at <server_name>.<endpoint>, so the endpoint
        # is the headless Service (pod name = server name) on the monitoring port.
        assert meta["natsServerMonitoringEndpoint"] == f"nats-headless.conclave.svc.cluster.local:{monitor}"
        assert int(meta["lagThreshold"]) > 0


def test_the_hpa_fallback_has_the_keda_bounds() -> None:
    scaled = by_kind(objects(AUTOSCALING / "keda"), "ScaledObject")
    hpas = by_kind(objects(AUTOSCALING / "hpa"), "HorizontalPodAutoscaler")
    assert set(hpas) == set(scaled)
    for name, hpa in hpas.items():
        spec, keda = hpa["spec"], scaled[name]["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert (spec["minReplicas"], spec["maxReplicas"]) == (keda["minReplicaCount"], keda["maxReplicaCount"])


def test_the_vllm_pods_have_a_disruption_budget() -> None:
    gpu = objects(OVERLAYS["gpu"])
    vllm = by_kind(gpu, "Deployment")["vllm"]
    pdb = by_kind(gpu, "PodDisruptionBudget")["vllm"]
    assert selects(pdb["spec"]["selector"]["matchLabels"], vllm["spec"]["template"]["metadata"]["labels"])
    assert pdb["spec"]["maxUnavailable"] == 1 < vllm["spec"]["replicas"]


def test_nats_pods_export_jetstream_metrics() -> None:
    sts = by_kind(BASE_OBJECTS, "StatefulSet")["nats"]
    pod = sts["spec"]["template"]
    exporter = next(c for c in pod["spec"]["containers"] if "prometheus-nats-exporter" in c["image"])
    port = next(p["containerPort"] for p in exporter["ports"] if p["name"] == "metrics")
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert "-jsz=all" in exporter["args"] and exporter["args"][-1] == "http://localhost:8222"
    assert exporter["resources"]["limits"] and exporter["securityContext"]["readOnlyRootFilesystem"] is True
    (monitor,) = by_kind(objects(K8S / "monitoring" / "operator"), "PodMonitor")["conclave"]["spec"]["selector"][
        "matchExpressions"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] in monitor["values"]


# --- storage ------------------------------------------------------------------------------------------------

def test_archive_and_trainer_share_the_volume() -> None:
    dep = BASE_DEPLOYMENTS["archiver"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    archive_dir = env_of(c)["CONCLAVE_ARCHIVE_DIR"]
    claim = claims[mounts[archive_dir]]
    assert claim in by_kind(BASE_OBJECTS, "PersistentVolumeClaim")

    (job,) = by_kind(objects(K8S / "trainer"), "Job").values()
    jpod = job["spec"]["template"]["spec"]
    (jc,) = jpod["containers"]
    assert jc["command"][:3] == ["python", "-m", "trainer.sft"]
    assert int(jc["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    vols = [v for v in jpod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == claim]
    assert vols and vols[0]["persistentVolumeClaim"].get("readOnly") is True
    assert all(m.get("readOnly") is True for m in jc["volumeMounts"] if m["name"] == vols[0]["name"])


def test_the_trainer_job_runs_trainer_sft_with_arguments_it_accepts() -> None:
    from trainer.sft import build_parser

    (job,) = by_kind(objects(K8S / "trainer"), "Job").values()
    (jc,) = job["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args(jc["args"])
    mounts = {m["mountPath"] for m in jc["volumeMounts"]}
    assert str(args.archive) in mounts and str(args.output) in mounts


# --- Grafana ------------------------------------------------------------------------------------------------

def dashboard_exprs(dash: dict[str, Any]) -> list[str]:
    panels = list(dash["panels"])
    for p in dash["panels"]:
        panels.extend(p.get("panels", []))
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def test_dashboard_queries_only_documented_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = dashboard_exprs(dash)
    assert exprs
    used: set[str] = set()
    for expr in exprs:
        names = set(re.findall(r"\bconclave_[a-z0-9_]+", expr))
        external = any(p in expr for p in DASHBOARD_EXTERNAL_PREFIXES)
        assert names or external, f"query without a conclave metric: {expr}"
        undocumented = names - DASHBOARD_METRICS
        assert not undocumented, f"{sorted(undocumented)} are not in DASHBOARD_METRICS (tests/test_deploy.py)"
        assert 'namespace="$namespace"' in expr, f"not filtered by $namespace: {expr}"
        used |= names
    missing = DASHBOARD_REQUIRED - used
    assert not missing, f"no panel for {sorted(missing)}"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert {"namespace", "service"} <= set(variables)
    assert any('service=~"$service"' in e for e in exprs)


def test_dashboard_metrics_exist_in_code() -> None:
    """Each documented metric is defined somewhere in the code, under the name the dashboard expects.
    The gateway's metrics are checked once the gateway is a registered service."""
    from services.registry import SERVICES

    sources = "\n".join(p.read_text() for d in ("services", "ceo") for p in (ROOT / d).rglob("*.py"))
    gateway_in_tree = "inference" in SERVICES
    missing = []
    for name in sorted(DASHBOARD_METRICS):
        base = re.sub(r"(_total|_bucket)$", "", name)
        if name.startswith("conclave_inference_") and not gateway_in_tree:
            continue
        if f'"{base}"' not in sources:
            missing.append(base)
    assert not missing, f"metrics the dashboard queries that no code defines: {missing}"


def test_dashboard_configmap_matches_json() -> None:
    (cm,) = load_docs(K8S / "monitoring" / "grafana-dashboard.yaml")
    assert cm["metadata"]["labels"].get("grafana_dashboard") == "1"
    embedded = json.loads(cm["data"]["conclave.json"])
    assert embedded == json.loads(DASHBOARD.read_text()), \
        "deploy/k8s/monitoring/grafana-dashboard.yaml is stale: run python deploy/grafana/render_configmap.py"


# --- multi-GPU: the trainer on several nodes, vLLM tensor-parallel and data-parallel --------------------------

TRAINER = K8S / "trainer"


def sft_args(args: list[str]):
    """trainer.sft's own parser over the arguments after `-m trainer.sft` of a torchrun command line."""
    from trainer.sft import build_parser

    at = args.index("trainer.sft")
    assert args[at - 1] == "-m"
    return build_parser().parse_args(args[at + 1:])


def test_the_pytorchjob_runs_torchrun_on_every_gpu_of_its_pods() -> None:
    (job,) = [d for d in load_docs(TRAINER / "pytorchjob" / "pytorchjob.yaml") if d["kind"] == "PyTorchJob"]
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert set(specs) == {"Master", "Worker"} and specs["Master"]["replicas"] == 1
    for spec in specs.values():
        (c,) = spec["template"]["spec"]["containers"]
        assert c["name"] == "pytorch", "the training operator looks for the container named pytorch"
        assert c["command"] == ["python", "-m", "torch.distributed.run"]
        assert int(job["spec"]["nprocPerNode"]) == c["resources"]["limits"]["nvidia.com/gpu"] == \
            c["resources"]["requests"]["nvidia.com/gpu"]
        args = sft_args(c["args"])
        assert args.resume and args.save_every > 0 and str(args.output) == "/checkpoints"
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["template"]["spec"]["volumes"]
                  if "persistentVolumeClaim" in v}
        mounts = {m["mountPath"]: claims.get(m["name"]) for m in c["volumeMounts"]}
        assert mounts["/checkpoints"] == "trainer-checkpoints" and mounts[str(args.archive)] == "conclave-archive"


@pytest.mark.skipif(not (KUBECTL or KUSTOMIZE), reason="neither kubectl nor kustomize is installed")
def test_the_multinode_trainer_is_an_indexed_job_that_meets_at_pod_0() -> None:
    rendered = kustomize_build(TRAINER / "multinode")
    (job,) = by_kind(rendered, "Job").values()
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = env_of(c)
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == int(env["NNODES"]) >= 2
    assert c["resources"]["limits"]["nvidia.com/gpu"] == int(env["GPUS_PER_NODE"])
    assert c["command"] == ["python", "-m", "torch.distributed.run"]
    torchrun = dict(a.removeprefix("--").split("=", 1) for a in c["args"][:c["args"].index("-m")])
    assert torchrun["nnodes"] == "$(NNODES)" and torchrun["nproc-per-node"] == "$(GPUS_PER_NODE)"
    # The rendezvous endpoint is pod 0 under the headless Service the pods' subdomain names.
    svc = by_kind(rendered, "Service")[pod["subdomain"]]
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {"batch.kubernetes.io/job-name": job["metadata"]["name"]}
    host, port = torchrun["rdzv-endpoint"].split(":")
    assert host == f"{job['metadata']['name']}-0.{svc['metadata']['name']}" and torchrun["rdzv-backend"] == "c10d"
    assert int(port) in {p["port"] for p in svc["spec"]["ports"]}
    args = sft_args(c["args"])
    assert args.resume and args.save_every > 0 and not args.lora_rank  # full fine-tuning, as the paper
    # Every rank writes its shards of a checkpoint into one directory: the claim must be shared.
    pvc = by_kind(rendered, "PersistentVolumeClaim")["trainer-checkpoints"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.skipif(not (KUBECTL or KUSTOMIZE), reason="neither kubectl nor kustomize is installed")
def test_vllm_serves_data_parallel_or_tensor_parallel_from_the_manifest() -> None:
    def vllm(overlay: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        dep = by_kind(kustomize_build(overlay), "Deployment")["vllm"]
        return dep, containers(dep)[0]

    # ../gpu: one GPU per pod, several pods behind the gateway (which routes by problem: router.py).
    dep, c = vllm(OVERLAYS["gpu"])
    assert dep["spec"]["replicas"] >= 2 and c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "--tensor-parallel-size" not in c["args"]
    # gpu-tp: each pod spans as many GPUs as it splits layers over.
    dep, c = vllm(K8S / "overlays" / "gpu-tp")
    tp = int(c["args"][c["args"].index("--tensor-parallel-size") + 1])
    assert tp >= 2 and c["resources"]["limits"]["nvidia.com/gpu"] == c["resources"]["requests"]["nvidia.com/gpu"] == tp
    assert "--enable-prefix-caching" in c["args"] and dep["spec"]["template"]["metadata"]["labels"].get(
        "conclave.dev/model-pod") == "true"

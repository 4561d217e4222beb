"""The Helm chart and the images, checked offline: the chart renders and lints with the Helm SDK
(helm-python-sdk), every manifest is valid Kubernetes 1.30 in strict mode (kubernetes-validate),
bad values are refused by values.schema.json, and the Dockerfiles copy what exists and pin what
pyproject.toml allows."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import helm_python
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement

from tests.paths import PROJECT_ROOT

CHART = PROJECT_ROOT / "deploy" / "helm" / "model-selector"
EXAMPLES = PROJECT_ROOT / "deploy" / "helm" / "examples"
KUBERNETES = "1.30.0"
# Prometheus Operator kinds: CRDs, not in Kubernetes' own schemas. Anything else unknown fails.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
ROUTER_CONFIG = (PROJECT_ROOT / "configs" / "router.yaml").read_text()
MONITORING = {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}}


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged.get(key, {}), value) if isinstance(value, dict) else value
    return merged


def values(example: str | None = None, **extra) -> dict:
    loaded = yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text()) if example else {}
    return _merge(_merge(loaded, {"gateway": {"routerConfig": ROUTER_CONFIG}}), extra)


def render(chart_values: dict) -> list[dict]:
    with helm_python.Chart.load(CHART) as chart:
        rendered = chart.render(values=chart_values, name="ms", namespace="routing")
    return [doc for name, text in sorted(rendered.items()) if name.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def one(manifests: list[dict], kind: str, suffix: str = "") -> dict:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, (kind, suffix, [m["metadata"]["name"] for m in found])
    return found[0]


def container(manifests: list[dict], suffix: str) -> dict:
    return one(manifests, "Deployment", suffix)["spec"]["template"]["spec"]["containers"][0]


SETUPS = {"default": values(), "s3 repository": values("s3-repository"), "no GPU": values("cpu-only"),
          "restricted model control": values("model-control"), "with Prometheus Operator": values(**MONITORING)}


@pytest.mark.parametrize("setup", SETUPS)
def test_every_manifest_is_valid_kubernetes_in_strict_mode(setup):
    manifests = render(SETUPS[setup])
    assert len(manifests) >= 10
    for manifest in manifests:
        if (manifest["apiVersion"], manifest["kind"]) in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(manifest, KUBERNETES, strict=True)  # raises on any unknown field


@pytest.mark.parametrize("setup", SETUPS)
def test_the_chart_lints_clean_for_kubernetes_1_30(setup, tmp_path):
    report = helm_python.lint(CHART, SETUPS[setup], strict=True, kube_version=f"v{KUBERNETES}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


def test_triton_pods_roll_safely_and_finish_what_they_started():
    manifests = render(values())
    deployment = one(manifests, "Deployment", "-triton")
    spec = deployment["spec"]["template"]["spec"]
    triton = container(manifests, "-triton")
    args = triton["args"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "--model-repository=/models" in args and "--model-control-mode=none" in args
    assert not any("restricted-protocol" in a for a in args) and "--strict-readiness=true" in args
    exit_timeout = int(next(a for a in args if a.startswith("--exit-timeout-secs=")).split("=")[1])
    pre_stop = int(triton["lifecycle"]["preStop"]["exec"]["command"][1])
    assert spec["terminationGracePeriodSeconds"] > exit_timeout + pre_stop
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    shm = next(v for v in spec["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"mountPath": "/dev/shm", "name": "dshm"} in triton["volumeMounts"]
    assert spec["affinity"]["podAntiAffinity"]
    assert spec["securityContext"]["runAsNonRoot"] and triton["securityContext"]["readOnlyRootFilesystem"]
    assert {p["name"]: p["containerPort"] for p in triton["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}


def test_gateways_spread_over_every_triton_pod_through_the_headless_service():
    manifests = render(values(gateway={"upstreamKeys": {"OPENAI_API_KEY": "sk-test"}}))
    headless = one(manifests, "Service", "-triton-headless")
    assert headless["spec"]["clusterIP"] == "None"
    gateway = container(manifests, "-gateway")
    assert f"--url=dns:///{headless['metadata']['name']}.routing.svc.cluster.local:8001" in gateway["args"]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/health"
    assert gateway["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert gateway["resources"]["requests"] and gateway["resources"]["limits"]
    secret = one(manifests, "Secret", "-gateway")
    assert secret["stringData"] == {"OPENAI_API_KEY": "sk-test"}
    assert gateway["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    config = one(manifests, "ConfigMap", "-gateway")
    assert yaml.safe_load(config["data"]["router.yaml"]) == yaml.safe_load(ROUTER_CONFIG)
    assert one(manifests, "Deployment", "-gateway")["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]
    assert one(manifests, "HorizontalPodAutoscaler", "-gateway")["spec"]["minReplicas"] >= 2
    assert {m["metadata"]["name"] for m in manifests if m["kind"] == "PodDisruptionBudget"} == \
        {"ms-model-selector-triton", "ms-model-selector-gateway"}


def test_triton_scales_on_queue_time_recorded_by_the_prometheus_rule():
    manifests = render(values(**MONITORING))
    hpa = one(manifests, "HorizontalPodAutoscaler", "-triton")
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    rule = one(manifests, "PrometheusRule")
    records = {r["record"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"] if "record" in r}
    # prometheus-adapter serves the recorded series under its name with ':' replaced (docs/deploy.md)
    assert metric == "model_selector_triton_queue_us_per_request"
    assert "nv_inference_queue_duration_us" in records["model_selector:triton_queue_us_per_request"]
    assert "nv_inference_compute_infer_duration_us" in records["model_selector:triton_queue_compute_ratio"]
    monitor = one(manifests, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    scraped = [m for m in manifests if m["kind"] == "Service"
               and m["metadata"]["labels"].get("model-selector.io/scrape") == "true"]
    assert sorted(m["metadata"]["name"] for m in scraped) == ["ms-model-selector-gateway", "ms-model-selector-triton"]
    assert all("metrics" in {p["name"] for p in m["spec"]["ports"]} for m in scraped)


def test_monitoring_objects_only_where_the_cluster_serves_their_api():
    kinds = {m["kind"] for m in render(values())}  # offline: monitoring.coreos.com/v1 is not served
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds


def test_repository_sources_and_model_control():
    s3 = container(render(values("s3-repository")), "-triton")
    assert "--model-repository=s3://model-selector-artifacts/repositories/2026-12-01-minilm" in s3["args"]
    assert s3["envFrom"] == [{"secretRef": {"name": "model-repository-s3"}}]
    gcs = container(render(values(triton={"modelRepository": {
        "source": "uri", "uri": "gs://bucket/repo-7", "credentials": {"secretName": "gcs", "gcsKeyFile": "sa.json"}}})),
        "-triton")
    assert {"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/var/run/secrets/model-repository/sa.json"} in gcs["env"]

    cpu = render(values("cpu-only"))
    assert "nvidia.com/gpu" not in container(cpu, "-triton")["resources"]["limits"]

    controlled = render(values("model-control"))
    triton = container(controlled, "-triton")
    assert "--model-control-mode=explicit" in triton["args"]
    restricted = [a for a in triton["args"] if "restricted-protocol" in a]
    assert len(restricted) == 2 and all(a.endswith(":model-control-key=$(MODEL_CONTROL_KEY)") for a in restricted)
    assert all("model-repository" in a.split("=", 1)[1].split(":")[0].split(",") for a in restricted)
    key = next(e for e in triton["env"] if e["name"] == "MODEL_CONTROL_KEY")
    assert key["valueFrom"]["secretKeyRef"] == {"name": "triton-model-control", "key": "key"}
    claim = next(v for v in one(controlled, "Deployment", "-triton")["spec"]["template"]["spec"]["volumes"]
                 if v["name"] == "model-repository")
    assert claim["persistentVolumeClaim"] == {"claimName": "model-selector-repository", "readOnly": True}


@pytest.mark.parametrize("bad, message", [
    ({"triton": {"modelRepository": {"source": "nfs"}}}, "source"),
    ({"triton": {"image": {"tag": "latest"}}}, "tag"),
    ({"triton": {"replica": 3}}, "replica"),
    ({"triton": {"modelControl": {"mode": "explicit"}}}, "secretName"),
    ({"triton": {"modelRepository": {"source": "uri", "uri": "http://bucket/repo"}}}, "uri"),
    ({"gateway": {"routerConfig": None}}, "routerConfig"),
    ({"gateway": {"upstreamKeys": {"bad-name": "x"}}}, "bad-name"),
])
def test_bad_values_are_refused_with_the_key_named(bad, message):
    chart_values = _merge(values(), bad)
    if bad.get("gateway", {}).get("routerConfig", "") is None:
        chart_values["gateway"].pop("routerConfig")
    with pytest.raises(helm_python.HelmError) as refused:
        render(chart_values)
    assert message in str(refused.value)


def _copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            sources += [s for s in line.split()[1:-1] if not s.startswith("--")]
    return sources


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "gateway.Dockerfile"])
def test_every_copy_source_exists_and_the_base_image_is_pinned(dockerfile):
    path = PROJECT_ROOT / "docker" / dockerfile
    sources = _copy_sources(path)
    # The model repository is `model-selector build`'s output, not tracked: the Dockerfile says to build it first.
    built = [s for s in sources if s == "model_repository"]
    assert sources and all((PROJECT_ROOT / s).exists() for s in sources if s not in built), sources
    assert not built or "model-selector build" in path.read_text()
    base = re.search(r"^FROM (\S+)", path.read_text(), re.M).group(1)
    assert ":" in base and not base.endswith(":latest"), base


def _pins(requirements: Path) -> dict[str, Requirement]:
    lines = [line.split("#")[0].strip() for line in requirements.read_text().splitlines()]
    return {Requirement(line).name.lower().replace("_", "-"): Requirement(line) for line in lines if line}


@pytest.mark.parametrize("requirements", ["requirements.txt", "gateway-requirements.txt"])
def test_image_pins_satisfy_pyproject(requirements):
    import tomllib

    declared = {Requirement(r).name.lower().replace("_", "-"): Requirement(r)
                for r in tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    for name, pin in _pins(PROJECT_ROOT / "docker" / requirements).items():
        (version,) = [s.version for s in pin.specifier if s.operator == "=="]
        assert name in declared, f"{requirements}: {name} is not a dependency in pyproject.toml"
        assert declared[name].specifier.contains(version), f"{requirements}: {name}=={version} vs {declared[name]}"
        assert pin.extras <= declared[name].extras


def _installed_by(requirements: Path) -> set[str]:
    """The top-level modules of the pinned distributions and of everything they depend on."""
    from importlib import metadata

    distributions, pending = set(), list(_pins(requirements).values())
    while pending:
        requirement = pending.pop()
        name = requirement.name.lower().replace("_", "-")
        if name in distributions:
            continue
        distributions.add(name)
        for dependency in metadata.requires(name) or []:
            dep = Requirement(dependency)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in ("", *requirement.extras)):
                pending.append(dep)
    return {module for module, providers in metadata.packages_distributions().items()
            if any(p.lower().replace("_", "-") in distributions for p in providers)}


GATEWAY_IN_ITS_IMAGE = """
import importlib.abc, json, sys
allowed = set(json.loads(sys.argv[1])) | {"model_selector"}
class OnlyTheImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top not in sys.stdlib_module_names and top not in allowed and not top.startswith("_"):
            raise ModuleNotFoundError(f"No module named {name!r} (not installed in the gateway image)", name=name)
        return None
sys.meta_path.insert(0, OnlyTheImage())
from model_selector.cli.main import build_parser
from model_selector.core.config import load_config
from model_selector.serve.gateway import create_gateway_app
build_parser().parse_args(["gateway", "--url", "dns:///triton-headless:8001"])
create_gateway_app(load_config(sys.argv[2]), "dns:///triton-headless:8001")
print("ok")
"""


def test_the_gateway_runs_with_only_what_its_image_installs():
    """A fresh interpreter that refuses every module outside docker/gateway-requirements.txt (and
    what those pull in) parses the gateway's command line and builds its app."""
    allowed = _installed_by(PROJECT_ROOT / "docker" / "gateway-requirements.txt")
    result = subprocess.run([sys.executable, "-c", GATEWAY_IN_ITS_IMAGE, json.dumps(sorted(allowed)),
                             str(PROJECT_ROOT / "configs" / "router.yaml")], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]

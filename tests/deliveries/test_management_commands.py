"""Management commands: `bootstrap_demo` and the `webhook_receiver` development server.

`webhook_receiver` runs as a real subprocess; requests reach it over HTTP.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from deliveries.signing import sign
from subscriptions.models import Endpoint
from subscriptions.secrets import generate_secret
from tenants.models import Tenant

REPO_ROOT = Path(__file__).resolve().parents[2]


def bootstrap(*args: str) -> dict[str, str]:
    """Run bootstrap_demo and return its `name: value` lines."""
    out = StringIO()
    call_command("bootstrap_demo", *args, stdout=out, stderr=StringIO())
    lines = [line.partition(": ") for line in out.getvalue().splitlines()]
    return {name: value for name, _, value in lines}


@pytest.mark.django_db
def test_bootstrap_demo_prints_ids_and_key():
    # given
    secret = generate_secret()
    # when
    printed = bootstrap("--secret", secret)
    # then
    assert set(printed) == {"tenant_id", "api_key", "endpoint_id"}
    tenant = Tenant.objects.get(pk=printed["tenant_id"])
    assert tenant.name == "demo"
    endpoint = Endpoint.objects.get(pk=printed["endpoint_id"])
    assert endpoint.tenant == tenant
    assert endpoint.url == "http://127.0.0.1:9000/"
    assert endpoint.is_active
    assert endpoint.secret == secret
    assert printed["api_key"].startswith("whk_")


@pytest.mark.django_db
def test_bootstrap_demo_key_authenticates_for_demo_tenant():
    printed = bootstrap("--secret", generate_secret())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {printed['api_key']}")
    response = client.get("/api/v1/endpoints")
    assert response.status_code == 200
    ids = [item["id"] for item in response.json()["results"]]
    assert ids == [printed["endpoint_id"]]


@pytest.mark.django_db
def test_bootstrap_demo_idempotent_on_tenant_and_endpoint():
    # given
    secret = generate_secret()
    first = bootstrap("--secret", secret)
    # when
    second = bootstrap("--secret", secret)
    # then: same tenant and endpoint, a new key, nothing duplicated
    assert second["tenant_id"] == first["tenant_id"]
    assert second["endpoint_id"] == first["endpoint_id"]
    assert second["api_key"] != first["api_key"]
    assert Tenant.objects.filter(name="demo").count() == 1
    assert Endpoint.objects.filter(tenant_id=first["tenant_id"]).count() == 1
    assert Endpoint.objects.get(pk=first["endpoint_id"]).secret == secret


@pytest.mark.django_db
def test_bootstrap_demo_new_secret_becomes_current():
    first = bootstrap("--secret", generate_secret())
    new_secret = generate_secret()
    second = bootstrap("--secret", new_secret)
    assert second["endpoint_id"] == first["endpoint_id"]
    endpoint = Endpoint.objects.get(pk=first["endpoint_id"])
    assert endpoint.secret == new_secret


@pytest.mark.django_db
def test_bootstrap_demo_rejects_invalid_secret():
    with pytest.raises(CommandError, match="--secret"):
        bootstrap("--secret", "not-a-secret")
    assert not Tenant.objects.filter(name="demo").exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(port: int, method: str, path: str, body: bytes = b"", headers=None):
    """One HTTP request to 127.0.0.1:`port`; return (status, parsed JSON body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def wait_for_health(proc: subprocess.Popen, port: int, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"receiver exited early: {proc.communicate()}")
        try:
            return request(port, "GET", "/health")
        except OSError:
            time.sleep(0.1)
    pytest.fail("receiver did not answer /health in time")


@pytest.fixture
def receiver_process():
    """Start `manage.py webhook_receiver` with a secret; yield (proc, port, secret)."""
    port = free_port()
    secret = generate_secret()
    env = {**os.environ, "DJANGO_DEVELOPMENT": "1", "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "manage.py", "webhook_receiver", "--port", str(port)]
    args += ["--secret", secret, "--status", "500,200"]
    proc = subprocess.Popen(
        args,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc, port, secret
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def signed(secret: str, body: bytes, *, msg_id: str | None = None) -> dict:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    now = int(time.time())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(now),
        "webhook-signature": sign(
            msg_id=msg_id, timestamp=now, body=body, secrets=[secret]
        ),
        "content-type": "application/json",
    }


def test_webhook_receiver_command_scripted_statuses_and_clean_exit(receiver_process):
    proc, port, secret = receiver_process
    body = b'{"id":"evt_1","type":"order.created","timestamp":"x","data":{}}'
    # given the receiver answers its health check
    assert wait_for_health(proc, port) == (200, {"ok": True, "received": 0})
    # when: correctly signed POSTs follow the script, a bad signature is refused
    assert request(port, "POST", "/", body, signed(secret, body))[0] == 500
    assert request(port, "POST", "/", body, signed(secret, body))[0] == 200
    assert request(port, "POST", "/", body, signed(secret, body))[0] == 200
    forged = signed(generate_secret(), body)
    assert request(port, "POST", "/", body, forged) == (
        401,
        {"error": "invalid signature"},
    )
    tampered = signed(secret, body)
    assert request(port, "POST", "/", body + b" ", tampered)[0] == 401
    assert request(port, "GET", "/health")[1]["received"] == 5
    # then SIGTERM stops it cleanly
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr
    assert f"listening on http://127.0.0.1:{port}/" in stdout
    assert "verified=false status=401" in stdout
    assert "Stopped after 5 request(s)." in stdout

"""Production settings: secure by default, secret key required, deploy checks clean."""

import json
import os
import secrets
import subprocess
import sys

from tests.conftest import REPO_ROOT


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {
        key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_settings_production_deploy_check_is_clean():
    done = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_settings_secret_key_required_outside_development():
    done = run_manage("check")
    assert done.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in done.stderr


def test_settings_debug_alone_does_not_allow_the_development_secret_key():
    done = run_manage("check", DJANGO_DEBUG="1")
    assert done.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in done.stderr


def test_settings_debug_off_and_https_on_by_default():
    code = (
        "from django.conf import settings as s;"
        "print(s.DEBUG, s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE,"
        " s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS > 0)"
    )
    done = run_manage("shell", "-c", code, DJANGO_SECRET_KEY=secrets.token_urlsafe(50))
    assert done.stdout.splitlines()[-1].split() == ["False"] + ["True"] * 4, done.stderr


def test_settings_invalid_dns_server_fails_at_start():
    done = run_manage(
        "check", DJANGO_DEVELOPMENT="1", WEBHOOK_DNS_SERVERS="127.0.0.1:5353,dns.google"
    )
    assert done.returncode != 0
    assert "WEBHOOK_DNS_SERVERS: 'dns.google' is not IP" in done.stderr
    done = run_manage(
        "check", DJANGO_DEVELOPMENT="1", WEBHOOK_DNS_SERVERS="127.0.0.1:5353,[::1]"
    )
    assert done.returncode == 0, done.stderr


def test_settings_refuse_a_mistyped_flag():
    done = run_manage(
        "check", DJANGO_DEVELOPMENT="1", WEBHOOK_ENDPOINT_QUEUES="isolated"
    )
    assert done.returncode != 0
    assert "WEBHOOK_ENDPOINT_QUEUES must be on or off" in done.stderr


def test_settings_refuse_a_retention_below_one_day_or_not_a_number():
    for value, message in (
        ("0", "WEBHOOK_RETENTION_DAYS must be a positive integer"),
        ("-5", "WEBHOOK_RETENTION_DAYS must be a positive integer"),
        ("thirty", "WEBHOOK_RETENTION_DAYS must be an integer, not 'thirty'"),
    ):
        done = run_manage("check", DJANGO_DEVELOPMENT="1", WEBHOOK_RETENTION_DAYS=value)
        assert done.returncode != 0, value
        assert message in done.stderr, done.stderr
    done = run_manage("check", DJANGO_DEVELOPMENT="1", WEBHOOK_RETENTION_DAYS="1")
    assert done.returncode == 0, done.stderr


def test_settings_replica_url_adds_a_mirrored_alias_like_default():
    code = (
        "import json; from django.conf import settings as s;"
        "d, r = s.DATABASES['default'], s.DATABASES['replica'];"
        "print(json.dumps([r['HOST'], r['PORT'], r['NAME'], r['TEST']['MIRROR'],"
        " r['OPTIONS'], r['CONN_MAX_AGE'] == d['CONN_MAX_AGE'],"
        " r['CONN_HEALTH_CHECKS']]))"
    )
    done = run_manage(
        "shell",
        "-c",
        code,
        DJANGO_DEVELOPMENT="1",
        DATABASE_REPLICA_URL="postgres://reader@10.0.0.9:6432/webhooks",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [
        "10.0.0.9",
        6432,
        "webhooks",
        "default",
        {"connect_timeout": 2},
        True,
        True,
    ]

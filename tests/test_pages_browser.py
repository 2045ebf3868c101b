"""Every page a person opens, in headless Chromium, served as production serves it.

gunicorn runs the app with DEBUG off, static files collected by `collectstatic`
and served by WhiteNoise, and the Content-Security-Policy on. On each page, as a
staff member: its stylesheet applied (a computed style only the stylesheet
sets), its scripts ran (what they draw is there), no request left 127.0.0.1,
the console logged no error, and a full-page screenshot is saved.
"""

import contextlib
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from deliveries.models import Delivery, DeliveryAttempt, DeliveryStatus
from tenants.services import api_key_create
from tests.browser import (
    chromium,
    console_errors,
    foreign_urls,
    full_page_screenshot,
    requested_urls,
)
from tests.conftest import REPO_ROOT, test_database_url
from tests.factories import make_endpoint, make_event, make_tenant
from tests.test_deploy_files import VENV_BIN, free_port, serving

HOST = "127.0.0.1"
PASSWORD = "s3cret-pw-for-pages"
# What a staff member of operations may do: see everything, replay dead letters.
STAFF_PERMISSIONS = (
    "view_tenant",
    "view_apikey",
    "view_endpoint",
    "view_event",
    "view_delivery",
    "change_delivery",
)
# Django admin's stylesheet (admin/css/base.css) colours the header.
ADMIN_STYLED = ("#header", "background-color", "rgb(65, 118, 144)")


def production_env(static_root) -> dict[str, str]:
    """The environment of a production web process, on plain HTTP on loopback."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DJANGO_DEVELOPMENT", "DJANGO_DEBUG", "PROMETHEUS_MULTIPROC_DIR"}
    }
    return {
        **env,
        "DJANGO_SECRET_KEY": "pages-browser-test",
        "DJANGO_STATIC_ROOT": str(static_root),
        "DATABASE_URL": test_database_url(),
        # Plain HTTP on loopback: no HTTPS redirect, cookies sent without TLS.
        "DJANGO_SSL_REDIRECT": "0",
        "DJANGO_SECURE_COOKIES": "0",
        "DJANGO_HSTS_SECONDS": "0",
    }


@pytest.fixture(scope="module")
def static_root(tmp_path_factory):
    """The static files as the Dockerfile and scripts/setup.sh collect them."""
    root = tmp_path_factory.mktemp("staticfiles")
    done = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"],
        cwd=REPO_ROOT,
        env=production_env(root),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (root / "staticfiles.json").exists()
    return root


@contextlib.contextmanager
def production_web(static_root, tmp_path, **extra_env):
    """gunicorn as the Procfile starts it, in production mode; yields its base URL.

    Threads: an idle connection Chromium opened ahead does not hold up requests
    a test makes beside the browser.
    """
    port = free_port()
    env = {**production_env(static_root), "HOME": str(tmp_path), **extra_env}
    args = ["webhooks_project.wsgi", "--bind", f"{HOST}:{port}", "--workers", "1"]
    with serving(
        [str(VENV_BIN / "gunicorn"), *args, "--threads", "4"],
        env=env,
        log_path=tmp_path / "web.log",
        ready_url=f"http://{HOST}:{port}/health",
    ):
        yield f"http://{HOST}:{port}"


@pytest.fixture
def web(static_root, tmp_path):
    """The production web process; its base URL."""
    with production_web(static_root, tmp_path) as url:
        yield url


@pytest.fixture
def browser(tmp_path, monkeypatch):
    """Headless Chromium with a new, empty profile."""
    with chromium(tmp_path / "chromium-profile", monkeypatch) as started:
        yield started


@pytest.fixture
def staff(django_user_model):
    """A staff member (not a superuser) with operations' permissions."""
    user = django_user_model.objects.create_user(
        "operator", password=PASSWORD, is_staff=True
    )
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=STAFF_PERMISSIONS)
    )
    return user


@pytest.fixture
def dead_letters() -> list[Delivery]:
    """Two tenants (with a key each) and their dead letters, three failed attempts
    each."""
    now = timezone.now()
    made = []
    for name, path in (("acme", "orders"), ("globex", "in")):
        tenant = make_tenant(name=name)
        api_key_create(tenant=tenant, name="producer")
        make_endpoint(tenant=tenant, url=f"https://{name}.example/webhooks/{path}")
        for event_type in ("order.created", "order.paid"):
            _, (delivery,) = make_event(tenant=tenant, event_type=event_type)
            for number in (1, 2, 3):
                DeliveryAttempt.objects.create(
                    delivery=delivery,
                    number=number,
                    started_at=now - timedelta(minutes=10 * number),
                    duration_ms=150 * number,
                    outcome="5xx",
                    response_status=503,
                    request_headers={"Content-Type": "application/json"},
                    response_headers={"Retry-After": "30"},
                    response_body='{"error": "upstream-unavailable"}',
                )
            made.append(delivery)
    Delivery.objects.filter(pk__in=[d.pk for d in made]).update(
        status=DeliveryStatus.DEAD_LETTER,
        attempt_count=3,
        last_status_code=503,
        dead_lettered_at=now - timedelta(minutes=5),
        dead_letter_reason="retries exhausted",
    )
    # One of a line (an ordering key): its page shows the key.
    Delivery.objects.filter(pk=made[0].pk).update(ordering_key="order-1042", sequence=1)
    return made


class Pages:
    """Opens pages and checks each as a person would see it."""

    def __init__(self, browser, base: str, shots):
        from selenium.webdriver.support.ui import WebDriverWait

        self.browser = browser
        self.base = base
        self.shots = shots
        self.wait = WebDriverWait(browser, 20, poll_frequency=0.2)
        self.checked: list[str] = []

    def open(self, path: str) -> None:
        """Load a page of the site and wait for it to finish loading."""
        self.browser.get(self.base + path)
        self.loaded()

    def follow(self, element) -> None:
        """Click what leads to another page, and wait until that page has loaded.

        The old document must go first: right after the click its readyState
        is still "complete", so waiting for that alone can return before the
        browser has left it.
        """
        from selenium.webdriver.support import expected_conditions

        page = self.browser.find_element("tag name", "html")
        element.click()
        self.wait.until(expected_conditions.staleness_of(page))
        self.loaded()

    def loaded(self) -> None:
        """Wait for the current page's load event."""
        self.wait.until(
            lambda b: b.execute_script("return document.readyState") == "complete"
        )

    def computed(self, selector: str, prop: str) -> str | None:
        """A computed style of the first element matching `selector`."""
        return self.browser.execute_script(
            "const e = document.querySelector(arguments[0]);"
            "return e && getComputedStyle(e).getPropertyValue(arguments[1]);",
            selector,
            prop,
        )

    def wait_for(self, selector: str) -> None:
        """Wait until the page (its scripts) shows an element."""
        self.wait.until(
            lambda b: b.execute_script(
                "return document.querySelector(arguments[0]) !== null", selector
            ),
            f"{selector} never appeared on {self.browser.current_url}",
        )

    def check(self, name: str, *styled: tuple[str, str, str]) -> None:
        """Styled as its stylesheets say, nothing foreign, no error; then a shot."""
        url = self.browser.current_url
        resources = self.browser.execute_script(
            "return performance.getEntries().map(e => e.name)"
        )
        assert foreign_urls(resources, HOST) == [], url
        assert foreign_urls(requested_urls(self.browser), HOST) == [], url
        assert console_errors(self.browser) == [], url
        for selector, prop, value in styled:
            assert self.computed(selector, prop) == value, (url, selector, prop)
        png = full_page_screenshot(self.browser, self.shots / f"{name}.png")
        assert len(png) > 10_000, url  # a drawn page, not a blank one
        self.checked.append(name)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_pages_styled_offline_and_without_errors(
    web, browser, staff, dead_letters, tmp_path
):
    pages = Pages(browser, web, tmp_path)
    first = dead_letters[0]

    # given: a staff member signs in through the admin's login form
    pages.open("/admin/login/")
    pages.check("login", ADMIN_STYLED)
    browser.find_element("id", "id_username").send_keys(staff.username)
    browser.find_element("id", "id_password").send_keys(PASSWORD)
    pages.follow(browser.find_element("css selector", "input[type=submit]"))
    assert browser.current_url == f"{web}/admin/"
    pages.check("admin-index", ADMIN_STYLED)

    # then: every changelist an operator works with
    for name, path in (
        ("tenants", "/admin/tenants/tenant/"),
        ("api-keys", "/admin/tenants/apikey/"),
        ("endpoints", "/admin/subscriptions/endpoint/"),
        ("events", "/admin/deliveries/event/"),
        ("deliveries", "/admin/deliveries/delivery/"),
    ):
        pages.open(path)
        assert browser.find_elements("css selector", "#result_list tbody tr"), path
        pages.check(name, ADMIN_STYLED)

    # the dead-letter queue, with the replay button and the filters
    pages.open("/admin/deliveries/deadletter/")
    rows = browser.find_elements("css selector", "#result_list tbody tr")
    assert len(rows) == len(dead_letters)
    # (object-tools links are upper-cased by the admin's stylesheet)
    assert "REPLAY ALL MATCHING (4)" in browser.find_element("id", "content").text
    assert "By reason" in browser.find_element("id", "changelist-filter").text
    pages.check("dead-letters", ADMIN_STYLED)

    # a delivery's page with its attempts (deliveries/admin.css lays them out)
    pages.open(f"/admin/deliveries/delivery/{first.pk}/change/")
    attempts = browser.find_elements("css selector", ".attempts tbody tr.has_original")
    assert len(attempts) == 3
    assert "450 ms" in browser.find_element("css selector", ".attempts").text
    assert "order-1042" in browser.find_element("id", "content-main").text
    pages.check(
        "delivery",
        ADMIN_STYLED,
        (".attempts td.field-excerpt", "max-width", "512px"),
    )

    # the "Replay selected" action asks first, stating how many
    pages.open("/admin/deliveries/deadletter/")
    browser.find_element("id", "action-toggle").click()
    browser.find_element(
        "css selector", "select[name=action] option[value=replay_selected]"
    ).click()
    pages.follow(browser.find_element("css selector", "button[name=index]"))
    confirmation = browser.find_element("id", "content-main").text
    assert "4 dead-lettered deliveries will be replayed." in confirmation
    assert Delivery.objects.filter(status=DeliveryStatus.DEAD_LETTER).count() == 4
    pages.check(
        "replay-confirmation",
        ADMIN_STYLED,
        (".replay-confirmation .replay-count", "font-size", "16px"),
    )
    pages.follow(browser.find_element("css selector", "input[value='Yes, replay 4']"))
    assert (
        "Replayed 4 deliveries"
        in browser.find_element("css selector", ".messagelist").text
    )
    assert not Delivery.objects.filter(status=DeliveryStatus.DEAD_LETTER).exists()
    pages.check("replayed", ADMIN_STYLED)

    # the API's documentation: Swagger UI and ReDoc, drawn by their scripts
    pages.open("/api/docs/")
    pages.wait_for(".swagger-ui .info .title")
    pages.wait_for(".opblock")
    pages.check(
        "swagger-ui",
        ("body", "background-color", "rgb(250, 250, 250)"),
        (".swagger-ui .info .title", "font-size", "36px"),
    )
    pages.open("/api/redoc/")
    pages.wait_for("redoc .api-content h1")
    assert "Webhooks API" in browser.find_element("css selector", "h1").text
    pages.check("redoc", ("body", "margin-top", "0px"))

    # the live dashboard
    pages.open("/dashboard/")
    pages.wait.until(lambda b: b.find_element("id", "status").text.startswith("Live"))
    pages.check("dashboard", ("header", "background-color", "rgb(38, 75, 93)"))

    assert len(pages.checked) == 14

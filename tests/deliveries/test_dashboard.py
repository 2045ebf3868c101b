"""The operations dashboard: access, figures, bounded queries, and a real browser."""

import struct
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from deliveries.dashboard import selectors
from deliveries.models import DeliveryAttempt
from deliveries.receiver import WebhookReceiver
from deliveries.services.attempts import delivery_run
from tests.browser import chromium
from tests.conftest import wait_until
from tests.deliveries.test_e2e_worker import create_endpoint, publish
from tests.factories import make_endpoint, make_event, make_tenant

PAGE, DATA = "/dashboard/", "/dashboard/data.json"
# Queries of one data.json request: session, user, then one per figure.
MAX_DATA_QUERIES = 8


@pytest.fixture
def staff(django_user_model):
    """A staff user allowed to view deliveries (not a superuser)."""
    user = django_user_model.objects.create_user("ops", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_delivery"))
    return user


def attempt_all(deliveries) -> list[DeliveryAttempt]:
    """Run one real attempt of each delivery; return the attempts recorded."""
    for delivery in deliveries:
        assert delivery_run(delivery_id=delivery.pk).attempted
    return list(DeliveryAttempt.objects.filter(delivery__in=deliveries))


@pytest.mark.django_db
@pytest.mark.parametrize("url", [PAGE, DATA])
def test_dashboard_refuses_anonymous(client, url):
    response = client.get(url)
    if url == PAGE:
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/?next=/dashboard/")
    else:
        assert response.status_code == 403
        assert response.json() == {"detail": "Staff access to deliveries is required."}


@pytest.mark.django_db
def test_dashboard_refuses_non_staff(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("user", password="pw"))
    assert client.get(PAGE)["Location"].startswith("/admin/login/")
    assert client.get(DATA).status_code == 403


@pytest.mark.django_db
def test_dashboard_refuses_staff_without_delivery_permission(client, staff):
    staff.user_permissions.clear()
    client.force_login(staff)
    assert client.get(PAGE).status_code == 403
    assert client.get(DATA).status_code == 403


@pytest.mark.django_db
def test_dashboard_page_serves_staff_and_admin_index_links_it(client, staff):
    client.force_login(staff)
    page = client.get(PAGE)
    assert page.status_code == 200
    assert page["Cache-Control"].startswith("max-age=0")
    assert b'"/dashboard/data.json"' in page.content
    assert b'href="/dashboard"' in client.get("/admin/").content
    assert client.get(DATA).json()["recent_attempts"] == []


@pytest.mark.django_db
def test_dashboard_data_figures_match_attempts(admin_client):
    # given: tenant A's endpoint answers 200, tenant B's answer 500 and 410
    with (
        WebhookReceiver() as ok,
        WebhookReceiver(statuses=[500]) as failing,
        WebhookReceiver(statuses=[410]) as gone,
    ):
        acme, beta = make_tenant(name="acme"), make_tenant(name="beta")
        ok_endpoint = make_endpoint(tenant=acme, url=ok.url)
        failing_endpoint = make_endpoint(tenant=beta, url=failing.url)
        gone_endpoint = make_endpoint(tenant=beta, url=gone.url)
        old, earlier, _ = (
            attempt_all(make_event(tenant=acme, event_type=f"order.{n}")[1])[0]
            for n in ("old", "earlier", "recent")
        )
        attempt_all(make_event(tenant=beta, event_type="invoice.paid")[1])
    now = timezone.now()
    DeliveryAttempt.objects.filter(pk=old.pk).update(
        started_at=now - timedelta(hours=2)
    )
    DeliveryAttempt.objects.filter(pk=earlier.pk).update(
        started_at=now - timedelta(minutes=30)
    )
    # when
    data = admin_client.get(DATA).json()
    # then: 5 min = recent success + 500 + 410; 1 h adds the earlier success
    rates = data["success_rates"]
    assert rates["5m"] == {
        "attempts": 3,
        "successes": 1,
        "failures": 2,
        "rate": pytest.approx(1 / 3),
        "sampled": False,
    }
    assert rates["1h"]["attempts"] == 4
    assert rates["1h"]["successes"] == 2
    assert rates["1h"]["rate"] == 0.5
    assert (data["dead_letters"], data["dead_letters_capped"]) == (1, False)
    feed = data["recent_attempts"]
    assert [a["event_type"] for a in feed[2:]] == [
        "order.recent",
        "order.earlier",
        "order.old",
    ]
    assert {
        (a["tenant"], a["endpoint_url"], a["outcome"], a["status_code"])
        for a in feed[:2]
    } == {
        ("beta", failing_endpoint.url, "5xx", 500),
        ("beta", gone_endpoint.url, "4xx", 410),
    }
    assert all(a["duration_ms"] >= 0 and a["started_at"] for a in feed)
    health = {row["endpoint_id"]: row for row in data["endpoints"]}
    assert set(health) == {
        str(e.pk) for e in (ok_endpoint, failing_endpoint, gone_endpoint)
    }
    ok_row = health[str(ok_endpoint.pk)]
    assert (ok_row["tenant"], ok_row["url"]) == ("acme", ok_endpoint.url)
    assert (ok_row["attempts"], ok_row["successes"], ok_row["failures"]) == (2, 2, 0)
    assert (ok_row["last_status_code"], ok_row["is_active"]) == (200, True)
    assert health[str(failing_endpoint.pk)]["failures"] == 1
    assert health[str(failing_endpoint.pk)]["circuit"] == "closed"
    gone_row = health[str(gone_endpoint.pk)]
    assert (gone_row["last_status_code"], gone_row["is_active"]) == (410, False)
    assert "410" in gone_row["disabled_reason"]


@pytest.mark.django_db
def test_dashboard_data_query_count_independent_of_rows(
    admin_client, django_assert_max_num_queries
):
    counts = []
    with WebhookReceiver() as receiver:
        tenant = make_tenant()
        make_endpoint(tenant=tenant, url=receiver.url)
        for size in (1, 8):
            if size > 1:  # more endpoints, events and attempts
                for _ in range(5):
                    make_endpoint(tenant=tenant, url=receiver.url)
            for _ in range(size):
                attempt_all(make_event(tenant=tenant)[1])
            with django_assert_max_num_queries(MAX_DATA_QUERIES) as captured:
                data = admin_client.get(DATA).json()
            counts.append(len(captured))
    assert len(data["recent_attempts"]) == selectors.FEED_LENGTH
    assert len(data["endpoints"]) == 6
    assert counts[0] == counts[1]


@pytest.mark.django_db
def test_dashboard_windows_read_only_newest_attempts(admin_client, monkeypatch):
    monkeypatch.setattr(selectors, "WINDOW_MAX_ATTEMPTS", 2)
    with WebhookReceiver() as receiver:
        tenant = make_tenant()
        make_endpoint(tenant=tenant, url=receiver.url)
        for _ in range(3):
            attempt_all(make_event(tenant=tenant)[1])
    rates = admin_client.get(DATA).json()["success_rates"]
    assert (rates["5m"]["attempts"], rates["5m"]["sampled"]) == (2, True)
    assert rates["1h"]["sampled"] is True


@pytest.mark.django_db
def test_dashboard_dead_letter_count_stops_at_cap(admin_client, monkeypatch):
    monkeypatch.setattr(selectors, "DEAD_LETTER_COUNT_CAP", 1)
    with WebhookReceiver(statuses=[410]) as gone:
        tenant = make_tenant()
        for _ in range(2):
            make_endpoint(tenant=tenant, url=gone.url)
        attempt_all(make_event(tenant=tenant)[1])
    data = admin_client.get(DATA).json()
    assert (data["dead_letters"], data["dead_letters_capped"]) == (1, True)


# --- A real headless Chromium against a live server and a real worker -----------


@pytest.fixture
def browser(tmp_path, monkeypatch):
    """Headless Debian Chromium driven by Selenium through chromedriver."""
    with chromium(tmp_path / "chromium-profile", monkeypatch) as started:
        yield started


def screenshot(browser, path) -> bytes:
    """Save a PNG of the window and check it is a real, full-size picture."""
    assert browser.save_screenshot(str(path))
    png = path.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) >= (1000, 600)
    assert len(png) > 20_000  # text and tables, not a blank page
    return png


def text(browser, element_id: str) -> str:
    """The visible text of an element of the page."""
    return browser.find_element("id", element_id).text


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_dashboard_in_browser_updates_live(
    live_server, browser, api, django_user_model, worker_factory, tmp_path
):
    from selenium.webdriver.support.ui import WebDriverWait

    django_user_model.objects.create_superuser("root", "", "s3cret-pw")
    worker_factory(WEBHOOK_RETRY_SCHEDULE="60")
    with WebhookReceiver() as ok, WebhookReceiver(statuses=[500]) as failing:
        create_endpoint(api, ok.url)
        create_endpoint(api, failing.url, event_types=["invoice.*"])
        publish(api, event_type="order.created")
        wait_until(DeliveryAttempt.objects.exists)
        # given: a staff member signs in through the admin login form
        browser.get(live_server.url + PAGE)
        assert "/admin/login/" in browser.current_url
        browser.find_element("id", "id_username").send_keys("root")
        browser.find_element("id", "id_password").send_keys("s3cret-pw")
        browser.find_element("css selector", "input[type=submit]").click()
        wait = WebDriverWait(browser, 15, poll_frequency=0.2)
        wait.until(lambda b: text(b, "status").startswith("Live"))
        assert browser.current_url == live_server.url + PAGE
        assert text(browser, "succeeded-5m") == "1"
        assert "order.created" in text(browser, "feed")
        before = screenshot(browser, tmp_path / "dashboard-before.png")
        # when: an event goes out through the API and the worker
        publish(api, event_type="invoice.paid")
        # then: the page shows it without a reload
        wait.until(lambda b: text(b, "attempts-5m") == "3")
        assert text(browser, "succeeded-5m") == "2"
        assert text(browser, "rate-5m") == "66.7 %"
        first_row = browser.find_element("css selector", "#feed tr").text
        assert "invoice.paid" in first_row
        assert "5xx" in text(browser, "feed")
        assert failing.url in text(browser, "endpoints")
        after = screenshot(browser, tmp_path / "dashboard-after.png")
    assert before != after
    # The admin login page has no icon: Chromium's request for one is not ours.
    errors = [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and "/favicon.ico" not in entry["message"]
    ]
    assert errors == []

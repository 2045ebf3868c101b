"""The portal in headless Chromium, served as production serves it, with a worker.

gunicorn runs the app with DEBUG off, static files collected and served by
WhiteNoise, the Content-Security-Policy on; a real Celery worker delivers to a
local receiver. A consumer opens the link the API issued, adds an endpoint,
reads its secret, sends a test event that arrives signed and shows as
succeeded, rotates the secret, is refused another consumer's endpoint, and
finally sees a short session run out. Each page: its stylesheet applied, no
request left 127.0.0.1, no console error, a screenshot in tmp_path.
"""

import json
import time
import urllib.request

import pytest

from catalog.services import event_type_create
from deliveries.models import Delivery, DeliveryStatus
from deliveries.receiver import WebhookReceiver
from tests.browser import console_errors, full_page_screenshot, requested_urls
from tests.conftest import LOOPBACK, wait_until
from tests.factories import make_endpoint
from tests.test_pages_browser import (  # noqa: F401 (fixtures)
    HOST,
    Pages,
    browser,
    production_env,
    production_web,
    static_root,
)

CONSUMER = "acme-eu"
# The portal's header is drawn by portal.css only.
PORTAL_STYLED = ("header.topbar", "background-color", "rgb(15, 23, 42)")
# Chromium logs the status of a page answered 403 or 404 as a console error.
ERROR_STATUS_LOG = ("status of 403", "status of 404")


@pytest.fixture
def web(static_root, tmp_path):  # noqa: F811
    """gunicorn in production mode, deliveries to loopback allowed; its base URL."""
    allowed = ",".join(LOOPBACK)
    with production_web(static_root, tmp_path, WEBHOOK_ALLOWED_NETWORKS=allowed) as url:
        yield url


def portal_link(web: str, key: str, **fields) -> dict:
    """`POST /api/v1/portal-sessions` over HTTP, as the producer calls it."""
    request = urllib.request.Request(
        f"{web}/api/v1/portal-sessions",
        data=json.dumps({"consumer": CONSUMER, **fields}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
        return json.loads(response.read())


def check_error_page(pages: Pages, name: str, title: str) -> None:
    """A styled 403/404 page of the portal: its title, nothing foreign, a shot."""
    window = pages.browser
    assert window.find_element("css selector", "h1").text == title
    assert pages.computed(*PORTAL_STYLED[:2]) == PORTAL_STYLED[2]
    errors = [
        message
        for message in console_errors(window)
        if not any(status in message for status in ERROR_STATUS_LOG)
    ]
    assert errors == []
    assert all(url.startswith(pages.base) for url in requested_urls(window))
    full_page_screenshot(window, pages.shots / f"{name}.png")
    pages.checked.append(name)


# chromedriver's error when the node it found belongs to a document the browser
# has just replaced (seen right after a navigation): it fails before any mouse
# event is sent, so the click did not happen.
LOST_NODE = "does not belong to the document"
LOST_NODE_TRIES = 5


def click(pages: Pages, selector: str) -> None:
    """Click an element and wait for the page it leads to (found again, a few
    times at most, while chromedriver loses its node to a document being
    replaced)."""
    from selenium.common.exceptions import WebDriverException

    for attempt in range(LOST_NODE_TRIES):
        try:
            pages.follow(pages.browser.find_element("css selector", selector))
            return
        except WebDriverException as exc:
            if LOST_NODE not in str(exc) or attempt == LOST_NODE_TRIES - 1:
                raise
            time.sleep(0.2)
            pages.loaded()


def text(pages: Pages, selector: str) -> str:
    return pages.browser.find_element("css selector", selector).text


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_portal_in_a_browser(
    web,
    browser,  # noqa: F811
    issued_key,
    tenant,
    worker_factory,
    static_root,  # noqa: F811
    tmp_path,
):
    pages = Pages(browser, web, tmp_path)
    event_type_create(
        tenant=tenant,
        name="order.created",
        description="An order was placed.",
        schema={"type": "object", "required": ["id"]},
        example={"id": "ord_1"},
    )
    theirs = make_endpoint(
        tenant=tenant, url="http://127.0.0.1:9/theirs", consumer="globex"
    )
    # The worker reads the secrets the web process encrypted: the same key.
    worker_factory(DJANGO_SECRET_KEY=production_env(static_root)["DJANGO_SECRET_KEY"])
    link = portal_link(web, issued_key.key)
    assert link["url"].startswith(f"{web}/portal/enter/")

    with WebhookReceiver() as receiver:
        # given: the consumer opens the link (its page, then its button);
        # no endpoint yet
        browser.get(link["url"])
        pages.loaded()
        assert "opens once" in text(pages, "main")
        pages.check("00-enter", PORTAL_STYLED)
        click(pages, "button[type=submit].button-primary")
        assert browser.current_url == f"{web}/portal/"
        assert CONSUMER in text(pages, ".session")
        assert "No endpoints yet" in text(pages, "main")
        pages.check("01-empty", PORTAL_STYLED)

        # a URL the outbound policy refuses: the error beside the field
        click(pages, "a.button-primary")
        pages.check("02-new-endpoint", PORTAL_STYLED)
        browser.find_element("id", "id_url").send_keys("http://10.1.2.3/hooks")
        click(pages, "button[type=submit].button-primary")
        assert "outbound address policy" in text(pages, ".field-invalid .error")
        pages.check("03-form-error", PORTAL_STYLED)

        # when: the receiver's URL, for order events
        field = browser.find_element("id", "id_url")
        field.clear()
        field.send_keys(receiver.url)
        browser.find_element("id", "id_description").send_keys("Orders to ERP")
        browser.find_element("id", "id_other_event_types").send_keys("order.*")
        click(pages, "button[type=submit].button-primary")
        assert "Endpoint added" in text(pages, ".flash")
        assert "order.*" in text(pages, "main")
        pages.check("04-endpoint", PORTAL_STYLED)

        # the secret, on demand
        click(pages, "#reveal-secret")
        secret = text(pages, "#secret")
        assert secret.startswith("whsec_")
        receiver.secrets = (secret,)
        pages.check("05-secret", PORTAL_STYLED)
        browser.back()
        pages.loaded()

        # a test event: delivered, signed, and shown as succeeded
        click(pages, "#send-test")
        assert "Test event webhook.test sent" in text(pages, ".flash")
        wait_until(lambda: receiver.received, timeout=30)
        [request] = receiver.received
        assert request.verified is True
        assert request.event_type == "webhook.test"
        wait_until(
            lambda: Delivery.objects.filter(status=DeliveryStatus.SUCCEEDED).exists(),
            timeout=30,
        )
        browser.refresh()
        pages.loaded()
        assert "Succeeded" in text(pages, "#delivery-list")
        assert browser.find_elements("css selector", "#stats .bar-ok")
        assert "100.0 %" in text(pages, "#stats")
        pages.check("06-delivered", PORTAL_STYLED)

        # the delivery and its attempt
        click(pages, "#delivery-list tbody a")
        assert "Attempt 1" in text(pages, ".attempt")
        assert "HTTP 200" in text(pages, ".attempt")
        assert "webhook-signature" in text(pages, ".attempt")
        pages.check("07-delivery", PORTAL_STYLED)

        # rotation: a new secret; both sign during the grace
        endpoint_url = browser.find_elements("css selector", ".crumbs a")[1]
        pages.follow(endpoint_url)
        click(pages, "#reveal-secret")
        click(pages, "#rotate-secret")
        assert "Secret rotated" in text(pages, ".flash")
        rotated = text(pages, "#secret")
        assert rotated.startswith("whsec_") and rotated != secret
        pages.check("08-rotated", PORTAL_STYLED)

    # the list: this consumer's endpoint only
    pages.open("/portal/")
    rows = browser.find_elements("css selector", "#endpoints tbody tr")
    assert len(rows) == 1 and "Orders to ERP" in rows[0].text
    pages.check("09-list", PORTAL_STYLED)

    # the event types the producer describes, read-only
    click(pages, ".topnav a[href$='event-types']")
    assert "An order was placed." in text(pages, "#type-ordercreated")
    assert '"required"' in text(pages, "#type-ordercreated pre.code")
    pages.check("09-event-types", PORTAL_STYLED)

    # another consumer's endpoint: the same page as an id that does not exist
    pages.open(f"/portal/endpoints/{theirs.pk}")
    check_error_page(pages, "10-not-found", "Not found")
    assert theirs.url not in browser.page_source

    # a short session runs out: its pages answer 403
    short = portal_link(web, issued_key.key, ttl_seconds=3, read_only=True)
    browser.get(short["url"])
    pages.loaded()
    click(pages, "button[type=submit].button-primary")
    assert "Read only" in text(pages, ".session")
    assert not browser.find_elements("css selector", "a.button-primary")
    pages.check("11-read-only", PORTAL_STYLED)
    time.sleep(3.5)
    browser.refresh()
    pages.loaded()
    check_error_page(pages, "12-expired", "This link has expired")
    browser.get(short["url"])
    pages.loaded()
    check_error_page(pages, "13-link-expired", "This link has expired")

    assert len(pages.checked) == 15

"""A catalog change made in one process is seen by another on its next request.

The web process is a real gunicorn (one worker, so one cache); the change is made
through the API in the test process. Nothing tells gunicorn: it learns of the
change from the tenant's `catalog_version`, read with the API key.
"""

import json
import urllib.error
import urllib.request

import pytest

from tests.catalog.conftest import ORDER_EXAMPLE, ORDER_SCHEMA, create_type, patch
from tests.test_pages_browser import production_web, static_root  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def publish(web: str, key: str, payload) -> int:
    """POST an order event to the web process; its status code."""
    request = urllib.request.Request(
        f"{web}/api/v1/events",
        data=json.dumps({"event_type": "order.created", "payload": payload}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_another_process_sees_each_change_on_its_next_request(
    api,
    issued_key,
    static_root,  # noqa: F811
    tmp_path,
):
    key = issued_key.key
    not_an_order = {"id": "o"}
    create_type(api, schema=ORDER_SCHEMA)
    with production_web(static_root, tmp_path) as web:
        # gunicorn compiles and caches the schema
        assert publish(web, key, not_an_order) == 400
        assert publish(web, key, ORDER_EXAMPLE) == 202
        # when: this process loosens the schema
        patch(api, "/api/v1/event-types/order.created", {"schema": {"type": "object"}})
        # then: the next request there follows the new one
        assert publish(web, key, not_an_order) == 202
        # and back, then gone
        patch(api, "/api/v1/event-types/order.created", {"schema": ORDER_SCHEMA})
        assert publish(web, key, not_an_order) == 400
        api.delete("/api/v1/event-types/order.created")
        assert publish(web, key, not_an_order) == 202

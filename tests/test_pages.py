"""HTML pages: a Content-Security-Policy on each, and only this deployment's assets.

The browser test (tests/test_pages_browser.py) checks what a browser makes of
them; these check the headers and the markup in the test process.
"""

import re

import pytest

pytestmark = pytest.mark.django_db

# src and href attributes of a page's markup.
ASSET = re.compile(r'\b(?:src|href)="([^"]*)"')


def policy(response) -> dict[str, list[str]]:
    """The response's Content-Security-Policy, directive by directive."""
    directives = {}
    for part in response["Content-Security-Policy"].split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


@pytest.mark.parametrize(
    "path", ["/admin/login/", "/admin/", "/api/docs/", "/dashboard/"]
)
def test_page_sends_a_policy_without_inline_script_or_style(client, admin_user, path):
    # given: signed in, except on the login page
    if path != "/admin/login/":
        client.force_login(admin_user)
    # when
    response = client.get(path)
    # then: everything from this deployment; no inline script or style; no framing
    assert response.status_code == 200
    found = policy(response)
    assert found["default-src"] == ["'self'"]
    assert found["script-src"] == ["'self'"]
    assert found["style-src"] == ["'self'"]
    assert found["img-src"] == ["'self'", "data:"]
    assert found["object-src"] == ["'none'"]
    assert found["frame-ancestors"] == ["'none'"]
    assert "<script>" not in response.content.decode()
    assert "<style>" not in response.content.decode()


def test_redoc_page_allows_inline_styles_and_its_worker_but_no_inline_script(client):
    found = policy(client.get("/api/redoc/"))
    assert found["script-src"] == ["'self'"]
    assert found["style-src"] == ["'self'", "'unsafe-inline'"]
    assert found["worker-src"] == ["'self'", "blob:"]


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_api_docs_load_only_local_files(client, path):
    # when
    page = client.get(path).content.decode()
    # then: every script, stylesheet and icon is a path of this deployment
    assets = ASSET.findall(page)
    assert assets
    assert all(url.startswith("/") and not url.startswith("//") for url in assets)
    assert "/static/drf_spectacular_sidecar/" in page
    assert "cdn" not in page.lower()
    assert "fonts.googleapis" not in page


def test_swagger_ui_init_script_is_a_resource_of_its_own(client):
    # The page loads it as /api/docs/?script= (no inline script to allow).
    page = client.get("/api/docs/").content.decode()
    assert '<script src="/api/docs/?script="></script>' in page
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle(" in script.content

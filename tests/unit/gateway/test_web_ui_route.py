"""The try-it page's route: off unless GATEWAY_WEB_UI asks for it; on, `/` is the page and every
file it names (script, style, demo media) is served from the package's web folder; it never
appears in the OpenAPI."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from services.gateway.api.web_ui import WEB_DIR
from tests.unit.gateway.gateway_harness import build_gateway


@pytest.fixture
def make_client(tmp_path):
    made = []

    def build(**overrides) -> TestClient:
        gateway = build_gateway(tmp_path / f"gw{len(made)}", None, workers=0, **overrides)
        client = TestClient(gateway.app, raise_server_exceptions=False)
        made.append(gateway)
        return client

    yield build
    for gateway in made:
        gateway.close()


def test_the_page_is_off_by_default(make_client) -> None:
    client = make_client()
    for path in ("/", "/web/app.js", "/web/demo/hero.mp4"):
        reply = client.get(path)
        assert reply.status_code == 404, path
        body = reply.json()  # the API's own 404, in either error shape
        assert (body.get("code") or body["error"]["code"]) == "not_found", body


def test_the_page_and_every_file_it_names_are_served(make_client) -> None:
    client = make_client(web_ui=True)
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    named = set(re.findall(r'(?:src|href)="(/web/[^"]+)"', html))
    script = (WEB_DIR / "app.js").read_text()
    named |= set(re.findall(r'"(/web/demo/[^"]+)"', script))
    assert {"/web/app.js", "/web/style.css", "/web/demo/source.jpg", "/web/demo/hero.mp4"} <= named
    kinds = {".js": "javascript", ".css": "text/css", ".jpg": "image/jpeg", ".mp4": "video/mp4"}
    for path in sorted(named):
        reply = client.get(path)
        assert reply.status_code == 200, path
        assert kinds[path[path.rfind(".") :]] in reply.headers["content-type"], path
        assert reply.content == (WEB_DIR / path.removeprefix("/web/")).read_bytes()
    assert client.get("/web/../config.py").status_code == 404
    assert client.get("/web/nope.js").status_code == 404
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/web") for p in paths)
    assert client.get("/healthz").json() == {"status": "ok"}  # the API is still the API

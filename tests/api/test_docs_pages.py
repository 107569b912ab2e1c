"""/docs and /redoc work without internet access: their scripts come from this server."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from api.docs_pages import DOCS_STATIC

from ..conftest import embedded_settings

KEY = "k" * 16


def test_the_docs_pages_load_their_files_from_this_server_without_a_key(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path, api_keys=KEY, embedded_devices="none")
    with TestClient(create_app(settings), root_path="/hwnas") as client:
        for page, files in (("/docs", 3), ("/redoc", 2)):
            html = client.get(page)
            assert html.status_code == 200 and "text/html" in html.headers["content-type"]
            linked = re.findall(r"""(?:src|href)=["']?([^"' >]+)""", html.text)
            local = [url for url in linked if url.startswith(f"/hwnas{DOCS_STATIC}/")]
            assert len(local) == files, linked  # script, style (Swagger UI) and icon
            assert not [url for url in linked if url.startswith(("http:", "https:", "//"))]
            assert "/hwnas/openapi.json" in html.text
            for url in local:  # no key: open, as the pages are
                served = client.get(url)
                assert served.status_code == 200 and len(served.content) > 1000, url
        assert client.get("/docs/oauth2-redirect").status_code == 200
        # the open prefix opens its files to reading, nothing else
        assert client.get(f"/hwnas{DOCS_STATIC}/%2e%2e/v1/jobs").status_code == 404
        assert client.get(f"/hwnas{DOCS_STATIC}/nope.js").status_code == 404
        assert client.post(f"/hwnas{DOCS_STATIC}/swagger-ui.css").status_code == 401
        assert client.get("/hwnas/v1/jobs").status_code == 401


def test_the_docs_pages_link_under_the_public_url_s_path(tmp_path: Path) -> None:
    """Behind a proxy that strips a path (``hwnas serve`` sets no root path), the pages
    link their files and the OpenAPI document under ``HWNAS_PUBLIC_URL``'s path."""
    settings = embedded_settings(
        tmp_path, public_url="https://nas.example.com/hwnas", embedded_devices="none"
    )
    with TestClient(create_app(settings)) as client:
        html = client.get("/docs").text
        assert f'"/hwnas{DOCS_STATIC}/swagger-ui-bundle.js"' in html
        assert "'/hwnas/openapi.json'" in html or '"/hwnas/openapi.json"' in html
        assert client.get(f"{DOCS_STATIC}/swagger-ui-bundle.js").status_code == 200

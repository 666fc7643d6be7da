"""The front end is served at / and /web without shadowing the API (no browser needed)."""

from __future__ import annotations

import re

import httpx

from app.api.routers.web import WEB_ROOT


def test_page_and_modules_are_served(api: httpx.Client) -> None:
    page = api.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    for path in re.findall(r'(?:src|href)="(web/[^"]+)"', page.text):
        assert api.get("/" + path).status_code == 200, path
    for module in sorted((WEB_ROOT / "js").glob("*.js")):
        response = api.get(f"/web/js/{module.name}")
        assert response.status_code == 200
        assert "javascript" in response.headers["content-type"]
        for imported in re.findall(r'from "\./([\w.]+)"', response.text):
            assert (WEB_ROOT / "js" / imported).is_file(), (module.name, imported)


def test_api_and_docs_still_answer(api: httpx.Client) -> None:
    assert api.get("/docs").status_code == 200
    assert api.get("/openapi.json").json()["paths"].keys() >= {"/v1/jobs", "/v1/exposures"}
    assert "/" not in api.get("/openapi.json").json()["paths"]
    for path in ("/v1/nope", "/web/nope.js", "/nope"):
        missing = api.get(path)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found", path
    assert api.post("/v1/nope").json()["error"]["code"] == "not_found"

"""The try-it page (`GATEWAY_WEB_UI=true`; `dynamics up` turns it on): `/` serves
`web/index.html`, `/web/...` its script, style and the demo media. Plain files, no build step;
the page calls the same REST API as the app does (see docs/gateway.md, "The try-it page")."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parent / "web"


def install_web_ui(app: FastAPI) -> None:
    """Serve the page at `/` and its files under `/web/`; neither is part of the OpenAPI."""

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(
            WEB_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"}
        )

    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")

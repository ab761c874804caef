"""`/docs`: Swagger UI for `/openapi.json`, from files a package ships (no CDN).

FastAPI's built-in page loads Swagger UI from a CDN, so it is blank where the service has
no Internet access (air-gapped installs, locked-down networks). The same page is served
here with the script, stylesheet and icon of the `swagger-ui-bundle-v2` package.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"


def install(app: FastAPI) -> None:
    """Serve Swagger UI at `/docs` and its files under `/docs/assets` (no token: the page
    and `/openapi.json` describe the API, every call it makes still needs a key)."""
    assets = StaticFiles(directory=str(swagger_ui_path))
    app.mount(ASSETS_PATH, assets, name="swagger-ui-assets")

    @app.get(DOCS_PATH, include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} — Swagger UI",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
        )

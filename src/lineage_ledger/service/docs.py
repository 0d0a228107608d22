"""The API's documentation page: Swagger UI at ``/docs``, its assets served by the service itself.

No CDN and no outside host: the page, its script and its stylesheet come from this process (the assets ship
in the ``fastapi-offline`` package, a dependency of the ``[server]`` extra), and Swagger UI's online spec
validator is switched off, so the page works on a network with no route to the internet. The page loads the
OpenAPI document from ``/openapi.json``; its "Authorize" button takes an API key for the calls it makes.
"""

from __future__ import annotations

from typing import Final

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

__all__ = ["DOCS_ASSETS_PATH", "DOCS_PATH", "add_docs_routes"]

DOCS_PATH: Final = "/docs"
DOCS_ASSETS_PATH: Final = "/docs/assets"
_ASSETS_PACKAGE: Final = ("fastapi_offline", "static")


def add_docs_routes(app: FastAPI, *, title: str, openapi_url: str) -> None:
    """Serve Swagger UI at ``/docs`` for the document at ``openapi_url``, every asset from this process."""
    app.mount(DOCS_ASSETS_PATH, StaticFiles(packages=[_ASSETS_PACKAGE]), name="docs-assets")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", ""))
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{title}: API",
            swagger_js_url=f"{root}{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_PATH}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": False},
        )

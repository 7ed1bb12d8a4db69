"""Swagger UI at ``/docs``, served from packaged files: no CDN, so it works offline.

The Swagger UI distribution comes from the ``fastapi-offline`` package (a runtime dependency
that ships ``swagger-ui-bundle.js`` and ``swagger-ui.css``); the page and the script that starts
Swagger UI are here. The page has no inline script or style, so its Content-Security-Policy
(:data:`DOCS_CSP`) allows scripts and styles from this server only; every other response keeps
the API's ``default-src 'none'`` (``server.headers.SecurityHeaders``).
"""

from __future__ import annotations

import html
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

DOCS_PATH = "/docs"

# What the page needs and nothing more: its own script and style files, images the stylesheet
# inlines as data: URIs, and fetches of /openapi.json and of "Try it out" to this server.
DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

_INIT_JS = """\
// Starts Swagger UI (a file, not an inline script: the page's CSP runs scripts from 'self').
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-openapi-url"),
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
    layout: "BaseLayout"
  });
})();
"""

_PAGE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>modelyard REST API</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{root}/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{root}/openapi.json"></div>
<script src="{root}/docs/swagger-ui-bundle.js"></script>
<script src="{root}/docs/init.js"></script>
</body>
</html>
"""

_ASSETS = {  # the only files served: no name from the request reaches the file system
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
}
_CACHE = "public, max-age=3600"

router = APIRouter(include_in_schema=False)


def swagger_ui_dir() -> Path:
    """The folder of the packaged Swagger UI files.

    Raises:
        RuntimeError: the package that ships them is missing or lacks a file.
    """
    try:
        folder = Path(str(resources.files("fastapi_offline") / "static"))
    except ModuleNotFoundError:
        raise RuntimeError("the Swagger UI files are missing: pip install fastapi-offline "
                           "(a dependency of modelyard)") from None
    missing = [name for name in _ASSETS if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"the Swagger UI files {missing} are missing from {folder}")
    return folder


@router.get(DOCS_PATH)
def docs_page(request: Request) -> Response:
    root = html.escape(str(request.scope.get("root_path", "")).rstrip("/"), quote=True)
    return Response(_PAGE.format(root=root), media_type="text/html; charset=utf-8",
                    headers={"Content-Security-Policy": DOCS_CSP, "Cache-Control": "no-cache"})


@router.get(f"{DOCS_PATH}/init.js")
def docs_init() -> Response:
    return Response(_INIT_JS, media_type="text/javascript; charset=utf-8",
                    headers={"Cache-Control": _CACHE})


def _asset_route(name: str, media_type: str) -> None:
    @router.get(f"{DOCS_PATH}/{name}", name=f"docs_{name}")
    def asset() -> Response:
        return FileResponse(swagger_ui_dir() / name, media_type=media_type,
                            headers={"Cache-Control": _CACHE})


for _name, _type in _ASSETS.items():
    _asset_route(_name, _type)

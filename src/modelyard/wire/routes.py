"""The route table: the one list of REST endpoints, shared by the server and the remote backend.

The server mounts a handler on each route; the remote backend builds its requests from the same
objects, so the two ends cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

API = "/api/v1"
_PLACEHOLDER = re.compile(r"\{(\w+)(?::\w+)?\}")

MediaType = Literal["application/json", "application/octet-stream"]
JSON: Final = "application/json"
BINARY: Final = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint. ``body`` is the one media type its request body may have (a web page
    cannot send either without asking first, see ``server.edge``): ``JSON`` for every POST
    and PATCH, ``BINARY`` for uploads, None for no body."""

    method: str
    path: str
    body: MediaType | None = None

    def __post_init__(self) -> None:
        if self.body is None and self.method in ("POST", "PATCH"):
            object.__setattr__(self, "body", JSON)

    def url(self, **params: str) -> str:
        """The path with ``{name}`` / ``{name:path}`` placeholders filled (values must already be
        URL-encoded)."""
        return _PLACEHOLDER.sub(lambda m: params[m.group(1)], self.path)


HEALTH = Route("GET", "/health")

CREATE_EXPERIMENT = Route("POST", f"{API}/experiments")
LIST_EXPERIMENTS = Route("GET", f"{API}/experiments")
GET_EXPERIMENT_BY_NAME = Route("GET", f"{API}/experiments/by-name")
GET_EXPERIMENT = Route("GET", f"{API}/experiments/{{experiment_id}}")
UPDATE_EXPERIMENT = Route("PATCH", f"{API}/experiments/{{experiment_id}}")
DELETE_EXPERIMENT = Route("DELETE", f"{API}/experiments/{{experiment_id}}")
RESTORE_EXPERIMENT = Route("POST", f"{API}/experiments/{{experiment_id}}/restore")
SET_EXPERIMENT_TAG = Route("POST", f"{API}/experiments/{{experiment_id}}/tags")

CREATE_RUN = Route("POST", f"{API}/runs")
SEARCH_RUNS = Route("POST", f"{API}/runs/search")
COUNT_RUNS = Route("POST", f"{API}/runs/count")
GET_RUN = Route("GET", f"{API}/runs/{{run_id}}")
UPDATE_RUN = Route("PATCH", f"{API}/runs/{{run_id}}")
DELETE_RUN = Route("DELETE", f"{API}/runs/{{run_id}}")
RESTORE_RUN = Route("POST", f"{API}/runs/{{run_id}}/restore")
LOG_BATCH = Route("POST", f"{API}/runs/{{run_id}}/batch")
DELETE_TAG = Route("DELETE", f"{API}/runs/{{run_id}}/tags")
METRIC_HISTORY = Route("GET", f"{API}/runs/{{run_id}}/metrics/history")

LIST_ARTIFACTS = Route("GET", f"{API}/runs/{{run_id}}/artifacts")
UPLOAD_ARTIFACT = Route("PUT", f"{API}/runs/{{run_id}}/artifacts/{{path:path}}", BINARY)
DOWNLOAD_ARTIFACT = Route("GET", f"{API}/runs/{{run_id}}/artifacts/{{path:path}}")

CREATE_UPLOAD = Route("POST", f"{API}/runs/{{run_id}}/uploads")
GET_UPLOAD = Route("GET", f"{API}/runs/{{run_id}}/uploads/{{upload_id}}")
UPLOAD_PART = Route("PUT", f"{API}/runs/{{run_id}}/uploads/{{upload_id}}/parts/{{part_number}}",
                    BINARY)
COMPLETE_UPLOAD = Route("POST", f"{API}/runs/{{run_id}}/uploads/{{upload_id}}/complete")
ABORT_UPLOAD = Route("DELETE", f"{API}/runs/{{run_id}}/uploads/{{upload_id}}")

COLLECT_GARBAGE = Route("POST", f"{API}/gc")

ALL_ROUTES = tuple(v for k, v in dict(globals()).items() if isinstance(v, Route))


def _pattern(path: str) -> str:
    parts = _PLACEHOLDER.split(path)  # literal, name, literal, name, ...
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            out.append(re.escape(part))
        else:
            out.append(".+" if f"{{{part}:path}}" in path else "[^/]+")
    return "".join(out)


_MATCHERS = tuple((route, re.compile(_pattern(route.path))) for route in ALL_ROUTES)


def route_for(method: str, path: str) -> Route | None:
    """The route a request for ``method`` and (decoded) ``path`` reaches, if any."""
    for route, pattern in _MATCHERS:
        if route.method == method and pattern.fullmatch(path):
            return route
    return None

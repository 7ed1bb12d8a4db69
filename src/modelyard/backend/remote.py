"""The remote backend: the same interface over HTTP, built from the shared route table."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import orjson

from modelyard.artifacts.paths import normalize_artifact_path
from modelyard.artifacts.upload_session import validate_upload_id
from modelyard.backend import transfer
from modelyard.backend.answers import raise_for
from modelyard.backend.multipart import (
    DEFAULT_PART_SIZE,
    MULTIPART_THRESHOLD,
    PARALLEL_PARTS,
    MultipartUploader,
    UploadJournal,
)
from modelyard.backend.transfer import Progress
from modelyard.domain import validation as v
from modelyard.domain.entities import (
    ArtifactEntry,
    Experiment,
    LogBatch,
    Metric,
    NewRun,
    Run,
    RunEnd,
    ViewType,
)
from modelyard.domain.history import HistoryFormat
from modelyard.domain.paging import Page
from modelyard.domain.retention import ABANDONED_AFTER_MS
from modelyard.errors import InvalidArgument, Unavailable
from modelyard.tracking.gc import GcReport
from modelyard.wire import routes as r
from modelyard.wire import schemas as w

_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
# Per socket operation, not per transfer: a large file may take minutes, a stalled peer not.
_TRANSFER_TIMEOUT = 300.0


def _seg(value: str) -> str:
    """One URL path segment (ids are validated server-side; never let them add segments)."""
    return quote(value, safe="")


# Path parameters are checked with the service's own validators before a URL is built: a value
# such as "", "." or ".." would otherwise change the URL itself (httpx collapses dot segments,
# an empty id hits the collection and a redirect), reaching another route instead of failing
# with the InvalidArgument the local backend raises.
_PATH_VALIDATORS: dict[str, Callable[..., str]] = {
    "run_id": v.validate_run_id, "experiment_id": v.validate_experiment_id,
    "upload_id": validate_upload_id,
}


_raise_for = raise_for  # the server's status table, read backwards (backend/answers.py)


class RemoteBackend:
    def __init__(self, base_url: str, *, timeout: httpx.Timeout = _TIMEOUT,
                 cache_dir: Path | None = None, part_size: int = DEFAULT_PART_SIZE,
                 multipart_threshold: int = MULTIPART_THRESHOLD,
                 parallel_parts: int = PARALLEL_PARTS) -> None:
        """Args:
            cache_dir: where the journal of unfinished multipart uploads lives (so a new
                process resumes them); None keeps no journal.
            part_size, multipart_threshold, parallel_parts: files of at least
                ``multipart_threshold`` bytes go in parts of ``part_size`` bytes (the server
                accepts 1-256 MiB), ``parallel_parts`` at a time.
        """
        if not base_url.startswith(("http://", "https://")):
            raise InvalidArgument(f"not an http(s) URL: {base_url!r}", field="uri")
        self.base_url = base_url.rstrip("/")
        if self.base_url.lower().endswith(r.API):  # every request would go to /api/v1/api/v1/…
            raise InvalidArgument(
                f"{base_url!r} ends in {r.API}: the URI must be the server's base URL, "
                f"{self.base_url[:-len(r.API)]!r} here, without {r.API}",
                field="uri")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        self.multipart_threshold = multipart_threshold
        journal = None if cache_dir is None else UploadJournal(cache_dir / "uploads")
        self._multipart = MultipartUploader(
            self.base_url, self._json_call, journal=journal, part_size=part_size,
            parallel=parallel_parts, timeout=_TRANSFER_TIMEOUT)

    # ------------------------------------------------------------------ plumbing

    def _call(self, route: r.Route, *, path: dict[str, str] | None = None,
              json: Any = None, params: dict[str, Any] | None = None,
              timeout: float | None = None) -> Any:
        url = route.url(**{k: _seg(_PATH_VALIDATORS[k](val)) for k, val in (path or {}).items()})
        content = None if json is None else orjson.dumps(json)
        headers = {"content-type": r.JSON} if content is not None else None
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            resp = self._http.request(route.method, url, content=content, params=params,
                                      headers=headers, **extra)
        except httpx.TransportError as exc:
            raise Unavailable(f"cannot reach {self.base_url}: {exc}") from exc
        _raise_for(resp.status_code, resp.content)
        return orjson.loads(resp.content) if resp.content else {}

    def _json_call(self, route: r.Route, path: dict[str, str], body: Any,
                   timeout: float | None) -> Any:
        return self._call(route, path=path, json=body, timeout=timeout)

    # ------------------------------------------------------------------ experiments

    def create_experiment(
        self, name: str, *, description: str = "", tags: dict[str, str] | None = None
    ) -> Experiment:
        d = self._call(r.CREATE_EXPERIMENT,
                       json={"name": name, "description": description, "tags": tags or {}})
        return w.experiment_from_json(d)

    def get_experiment(self, experiment_id: str) -> Experiment:
        return w.experiment_from_json(
            self._call(r.GET_EXPERIMENT, path={"experiment_id": experiment_id})
        )

    def get_experiment_by_name(self, name: str) -> Experiment:
        return w.experiment_from_json(self._call(r.GET_EXPERIMENT_BY_NAME, params={"name": name}))

    def list_experiments(
        self,
        *,
        view: ViewType | str = ViewType.ACTIVE_ONLY,
        max_results: int = 1000,
        page_token: str | None = None,
    ) -> Page[Experiment]:
        params: dict[str, Any] = {"view": str(view), "max_results": max_results}
        if page_token:
            params["page_token"] = page_token
        d = self._call(r.LIST_EXPERIMENTS, params=params)
        return Page([w.experiment_from_json(e) for e in d["experiments"]], d["next_page_token"])

    def update_experiment(
        self, experiment_id: str, *, name: str | None = None, description: str | None = None
    ) -> Experiment:
        body = {k: v for k, v in (("name", name), ("description", description)) if v is not None}
        d = self._call(r.UPDATE_EXPERIMENT, path={"experiment_id": experiment_id}, json=body)
        return w.experiment_from_json(d)

    def delete_experiment(self, experiment_id: str) -> None:
        self._call(r.DELETE_EXPERIMENT, path={"experiment_id": experiment_id})

    def restore_experiment(self, experiment_id: str, *, new_name: str | None = None) -> None:
        self._call(r.RESTORE_EXPERIMENT, path={"experiment_id": experiment_id},
                   json={} if new_name is None else {"new_name": new_name})

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        self._call(r.SET_EXPERIMENT_TAG, path={"experiment_id": experiment_id},
                   json={"key": key, "value": value})

    # ------------------------------------------------------------------ runs

    def create_run(
        self,
        experiment_id: str,
        *,
        run_name: str | None = None,
        user_id: str = "unknown",
        start_time: int | None = None,
        tags: dict[str, str] | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> Run:
        body = {"experiment_id": experiment_id, "run_name": run_name, "user_id": user_id,
                "start_time": start_time, "tags": tags or {}, "parent_run_id": parent_run_id,
                "run_id": run_id}
        return w.run_from_json(self._call(r.CREATE_RUN, json=body))

    def get_run(self, run_id: str) -> Run:
        return w.run_from_json(self._call(r.GET_RUN, path={"run_id": run_id}))

    def update_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        end_time: int | None = None,
        run_name: str | None = None,
    ) -> Run:
        body = {k: v for k, v in (("status", None if status is None else str(status)),
                                  ("end_time", end_time), ("run_name", run_name))
                if v is not None}
        return w.run_from_json(self._call(r.UPDATE_RUN, path={"run_id": run_id}, json=body))

    def delete_run(self, run_id: str) -> None:
        self._call(r.DELETE_RUN, path={"run_id": run_id})

    def restore_run(self, run_id: str) -> None:
        self._call(r.RESTORE_RUN, path={"run_id": run_id})

    def log_batch(self, run_id: str, batch: LogBatch, *, batch_id: str | None = None,
                  create: NewRun | None = None, end: RunEnd | None = None) -> bool:
        d = self._call(r.LOG_BATCH, path={"run_id": run_id},
                       json=w.batch_to_json(batch, batch_id, create=create, end=end))
        return bool(d["stored"])

    def delete_tag(self, run_id: str, key: str) -> None:
        self._call(r.DELETE_TAG, path={"run_id": run_id}, params={"key": key})

    def get_metric_history(
        self, run_id: str, key: str, *, max_points: int | None = None
    ) -> list[Metric]:
        params: dict[str, Any] = {"key": key}
        if max_points is not None:  # checked here too: "10" must fail as it does embedded
            params["max_points"] = v.validate_max_points(max_points)
        d = self._call(r.METRIC_HISTORY, path={"run_id": run_id}, params=params)
        return w.history_from_json(d)

    def export_metric_history(
        self, run_id: str, key: str, dest: Path, *, format: HistoryFormat
    ) -> int:
        url = r.METRIC_HISTORY.url(run_id=_seg(v.validate_run_id(run_id)))
        query = urlencode({"key": key, "format": str(format)})
        answer = transfer.get_to_file(self.base_url, f"{url}?{query}", dest,
                                      timeout=_TRANSFER_TIMEOUT)
        _raise_for(answer.status, answer.body)
        return answer.size

    def search_runs(
        self,
        experiment_ids: Sequence[str] | None,
        *,
        filter: str | None = None,
        order_by: Sequence[str] | None = None,
        view: ViewType | str = ViewType.ACTIVE_ONLY,
        max_results: int = 1000,
        page_token: str | None = None,
        include_total: bool = False,
    ) -> Page[Run]:
        body = {"experiment_ids": _id_list(experiment_ids), "filter": filter,
                "order_by": list(order_by or ()), "view": str(view),
                "max_results": max_results, "page_token": page_token,
                "include_total": include_total}
        d = self._call(r.SEARCH_RUNS, json=body)
        return Page([w.run_from_json(x) for x in d["runs"]], d["next_page_token"],
                    d.get("total"))

    def count_runs(
        self,
        experiment_ids: Sequence[str] | None,
        *,
        filter: str | None = None,
        view: ViewType | str = ViewType.ACTIVE_ONLY,
    ) -> int:
        body = {"experiment_ids": _id_list(experiment_ids), "filter": filter, "view": str(view)}
        return int(self._call(r.COUNT_RUNS, json=body)["count"])

    def collect_garbage(self, *, older_than_ms: int, dry_run: bool = True,
                        abandoned_after_ms: int = ABANDONED_AFTER_MS) -> GcReport:
        body = {"older_than_ms": older_than_ms, "dry_run": dry_run,
                "abandoned_after_ms": abandoned_after_ms}
        return GcReport.from_json(self._call(r.COLLECT_GARBAGE, json=body))

    # ------------------------------------------------------------------ artifacts

    def _artifact_url(self, route: r.Route, run_id: str, artifact_path: str) -> str:
        # Normalised here exactly as the service does (the same UnsafePath as the local backend);
        # sent raw, "a/../b" would be collapsed by httpx into another, unchecked path.
        clean = normalize_artifact_path(artifact_path)
        # Slashes stay as separators; everything else in each segment is percent-encoded.
        return route.url(run_id=_seg(v.validate_run_id(run_id)), path=quote(clean, safe="/"))

    def upload_file(self, run_id: str, artifact_path: str, local_file: Path, *,
                    on_progress: Progress | None = None) -> ArtifactEntry:
        url = self._artifact_url(r.UPLOAD_ARTIFACT, run_id, artifact_path)
        if local_file.stat().st_size >= self.multipart_threshold:
            entry, _ = self._multipart.upload(
                v.validate_run_id(run_id), normalize_artifact_path(artifact_path), local_file,
                on_progress=on_progress)
            return entry
        answer = transfer.put_file(self.base_url, url, local_file, timeout=_TRANSFER_TIMEOUT,
                                   on_progress=on_progress)
        _raise_for(answer.status, answer.body)
        return w.artifact_from_json(orjson.loads(answer.body))

    def upload_bytes(self, run_id: str, artifact_path: str, data: bytes) -> ArtifactEntry:
        url = self._artifact_url(r.UPLOAD_ARTIFACT, run_id, artifact_path)
        try:
            resp = self._http.request(
                r.UPLOAD_ARTIFACT.method, url, content=data,
                headers={"content-type": "application/octet-stream"},
            )
        except httpx.TransportError as exc:
            raise Unavailable(f"cannot reach {self.base_url}: {exc}") from exc
        _raise_for(resp.status_code, resp.content)
        return w.artifact_from_json(orjson.loads(resp.content))

    def download_file(self, run_id: str, artifact_path: str, dest: Path, *,
                      digest: str | None = None,
                      on_progress: Progress | None = None) -> ArtifactEntry:
        url = self._artifact_url(r.DOWNLOAD_ARTIFACT, run_id, artifact_path)
        # Resumable: an interrupted download (this process or an earlier one) goes on with
        # HTTP Range from where it stopped; the whole file is verified at the end.
        answer = transfer.download_resumable(self.base_url, url, dest, digest=digest,
                                             timeout=_TRANSFER_TIMEOUT, on_progress=on_progress)
        _raise_for(answer.status, answer.body)
        return ArtifactEntry(normalize_artifact_path(artifact_path), answer.digest or "",
                             answer.size)

    def list_artifacts(self, run_id: str, path: str = "") -> list[ArtifactEntry]:
        d = self._call(r.LIST_ARTIFACTS, path={"run_id": run_id}, params={"path": path})
        return [w.artifact_from_json(e) for e in d["files"]]

    def close(self) -> None:
        self._http.close()


def _id_list(experiment_ids: Sequence[str] | None) -> object:
    # a bare string is sent as it is, so the server refuses it exactly as embedded mode does
    if experiment_ids is None or isinstance(experiment_ids, str):
        return experiment_ids
    return list(experiment_ids)

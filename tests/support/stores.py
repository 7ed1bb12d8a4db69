"""Writing to and searching the stores directly, as the store-level tests do: runs and
experiments made with few words, a batch logged from plain values, a search from filter text."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from modelyard.domain.entities import LogBatch, Metric, Param, Run, Tag, ViewType
from modelyard.domain.paging import Page
from modelyard.domain.search import Expr, parse_filter, parse_order_by
from modelyard.stores.sql import SqlStores


def rid(n: int) -> str:
    """A deterministic run id; ids order like ``n`` does."""
    return f"{n:032x}"


def new_exp(stores: SqlStores, name: str | None = None, **kw: object) -> str:
    return stores.experiments.create_experiment(
        name or f"exp-{uuid.uuid4().hex[:12]}",
        description=str(kw.get("description", "")),
        tags=dict(kw.get("tags", {})),  # type: ignore[call-overload]
        now=int(kw.get("now", 1000)),  # type: ignore[call-overload]
    )


def new_run(
    stores: SqlStores,
    run_id: str | int | None = None,
    *,
    exp: str = "0",
    name: str = "run",
    user: str = "u",
    start: int = 1000,
    tags: dict[str, str] | None = None,
    parent: str | None = None,
) -> str:
    if run_id is None:
        run_id = uuid.uuid4().hex
    elif isinstance(run_id, int):
        run_id = rid(run_id)
    stores.runs.create_run(
        run_id=run_id, experiment_id=exp, run_name=name, user_id=user, start_time=start,
        tags=tags or {}, parent_run_id=parent,
    )
    return run_id


def log(
    stores: SqlStores,
    run_id: str,
    *,
    metrics: Sequence[Metric] = (),
    params: dict[str, str] | Sequence[tuple[str, str]] = (),
    tags: dict[str, str] | Sequence[tuple[str, str]] = (),
    batch_id: str | None = None,
) -> bool:
    p = params.items() if isinstance(params, dict) else params
    t = tags.items() if isinstance(tags, dict) else tags
    return stores.runs.log_batch(
        run_id,
        LogBatch(metrics=tuple(metrics), params=tuple(Param(k, v) for k, v in p),
                 tags=tuple(Tag(k, v) for k, v in t)),
        batch_id=batch_id,
    )


def search(
    stores: SqlStores,
    exps: Sequence[str],
    flt: str | Expr | None = None,
    order: Sequence[str] = (),
    *,
    view: ViewType = ViewType.ACTIVE_ONLY,
    max_results: int = 1000,
    token: str | None = None,
) -> Page[Run]:
    return stores.runs.search_runs(
        exps,
        filter_expr=parse_filter(flt) if isinstance(flt, str | None) else flt,
        order_by=parse_order_by(list(order)),
        view=view,
        max_results=max_results,
        page_token=token,
    )

"""Experiments in SQL."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError

from modelyard.domain.entities import Experiment, LifecycleStage, ViewType
from modelyard.domain.lookalikes import skeleton
from modelyard.domain.paging import Page, decode_cursor, encode_cursor, query_fingerprint
from modelyard.domain.validation import is_experiment_id
from modelyard.errors import AlreadyExists, ExperimentNotFound, InvalidArgument, InvalidState
from modelyard.stores.sql import schema as s
from modelyard.stores.sql.base import SqlBase
from modelyard.stores.sql.convert import to_experiment


def _tags_for(conn: Connection, ids: list[int]) -> dict[int, dict[str, str]]:
    out: dict[int, dict[str, str]] = defaultdict(dict)
    if ids:
        rows = conn.execute(
            select(s.experiment_tags).where(s.experiment_tags.c.experiment_id.in_(ids))
        )
        for r in rows:
            out[r.experiment_id][r.key] = r.value
    return out


def _exp_id(experiment_id: str) -> int:
    if not is_experiment_id(experiment_id):
        raise ExperimentNotFound(f"experiment {experiment_id!r} does not exist",
                                 field="experiment_id")
    return int(experiment_id)


def _name_taken(name: str) -> AlreadyExists:
    return AlreadyExists(f"an experiment named {name!r} already exists", field="name")


def name_skeleton(name: str) -> str:
    """What ``experiments.name_skeleton`` holds for ``name``: the SHA-256 (hex) of its UTS #39
    skeleton, so that names that look alike have the same one. A digest, not the skeleton
    itself: a skeleton can be many times longer than its name (one ligature decomposes into
    up to 18 characters), and PostgreSQL bounds what one index entry may hold."""
    return hashlib.sha256(skeleton(name).encode("utf-8")).hexdigest()


_ACTIVE = LifecycleStage.ACTIVE.value


def _lookalike(conn: Connection, name: str, key: str, *, exclude: int | None) -> Any:
    """The experiment, active or deleted, whose name differs from ``name`` but has its
    skeleton ``key`` (an active one first, then the oldest), or None. ``exclude`` is the
    experiment being renamed: a name may look like its own."""
    e = s.experiments.c
    query = select(e.experiment_id, e.name, e.lifecycle_stage).where(
        e.name_skeleton == key, e.name != name)
    if exclude is not None:
        query = query.where(e.experiment_id != exclude)
    return conn.execute(
        query.order_by((e.lifecycle_stage == _ACTIVE).desc(), e.experiment_id).limit(1)
    ).first()


def _looks_taken(name: str, holder: Any) -> AlreadyExists:
    state = "" if holder.lifecycle_stage == _ACTIVE else ", deleted"
    return AlreadyExists(
        f"experiment name {name!r} looks like the existing experiment {holder.name!r} "
        f"(id {holder.experiment_id}{state}); choose a name that differs visibly",
        field="name",
    )


def _checked_skeleton(conn: Connection, name: str, *, exclude: int | None = None) -> str:
    """``name``'s skeleton digest, once no other experiment's name looks like it.

    Deleted experiments count (restoring one would collide with the look-alike); the unique
    index over active experiments is what keeps two concurrent writers from both passing."""
    key = name_skeleton(name)
    holder = _lookalike(conn, name, key, exclude=exclude)
    if holder is not None:
        raise _looks_taken(name, holder)
    return key


class SqlExperimentStore(SqlBase):
    def create_experiment(
        self, name: str, *, description: str, tags: dict[str, str], now: int
    ) -> str:
        try:
            with self._write() as conn:
                key = _checked_skeleton(conn, name)
                new_id = conn.execute(
                    s.experiments.insert()
                    .values(
                        name=name,
                        name_skeleton=key,
                        description=description,
                        lifecycle_stage=LifecycleStage.ACTIVE.value,
                        creation_time=now,
                        last_update_time=now,
                    )
                    .returning(s.experiments.c.experiment_id)
                ).scalar_one()
                if tags:
                    conn.execute(
                        s.experiment_tags.insert(),
                        [{"experiment_id": new_id, "key": k, "value": v} for k, v in tags.items()],
                    )
        except IntegrityError:
            raise self._name_conflict(name) from None
        return str(new_id)

    def _name_conflict(self, name: str, *, exclude: int | None = None) -> AlreadyExists:
        """Why writing ``name`` violated a unique index (read after the failed transaction):
        an active experiment holds it, or (a concurrent writer won) one looks like it."""
        with self._read() as conn:
            e = s.experiments.c
            query = select(e.experiment_id).where(e.name == name, e.lifecycle_stage == _ACTIVE)
            if exclude is not None:
                query = query.where(e.experiment_id != exclude)
            if conn.execute(query).first() is None:
                holder = _lookalike(conn, name, name_skeleton(name), exclude=exclude)
                if holder is not None:
                    return _looks_taken(name, holder)
        return _name_taken(name)

    def _get(self, conn: Connection, exp_id: int) -> Experiment:
        row = conn.execute(
            select(s.experiments).where(s.experiments.c.experiment_id == exp_id)
        ).first()
        if row is None:
            raise ExperimentNotFound(f"experiment {exp_id} does not exist", field="experiment_id")
        return to_experiment(row, _tags_for(conn, [exp_id])[exp_id])

    def get_experiment(self, experiment_id: str) -> Experiment:
        with self._read() as conn:
            return self._get(conn, _exp_id(experiment_id))

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        with self._read() as conn:
            # The active holder of the name, else the one deleted most recently.
            row = conn.execute(
                select(s.experiments)
                .where(s.experiments.c.name == name)
                .order_by(
                    (s.experiments.c.lifecycle_stage == LifecycleStage.ACTIVE.value).desc(),
                    s.experiments.c.deleted_time.desc(),
                    s.experiments.c.experiment_id.desc(),
                )
                .limit(1)
            ).first()
            if row is None:
                return None
            return to_experiment(row, _tags_for(conn, [row.experiment_id])[row.experiment_id])

    def list_experiments(
        self, *, view: ViewType, max_results: int, page_token: str | None
    ) -> Page[Experiment]:
        fp = query_fingerprint("experiments", view.value)
        cursor = decode_cursor(page_token, fp)
        query = select(s.experiments).where(
            s.experiments.c.lifecycle_stage.in_([st.value for st in view.stages()])
        )
        if cursor is not None:  # keyset: strictly after the last id returned
            if len(cursor) != 1 or not isinstance(cursor[0], int):
                raise InvalidArgument("page_token is malformed", field="page_token")
            query = query.where(s.experiments.c.experiment_id > cursor[0])
        with self._read() as conn:
            rows = conn.execute(
                query.order_by(s.experiments.c.experiment_id).limit(max_results + 1)
            ).all()
            page = rows[:max_results]
            tags = _tags_for(conn, [r.experiment_id for r in page])
        token = (
            encode_cursor([page[-1].experiment_id], fp) if len(rows) > max_results else None
        )
        return Page([to_experiment(r, tags[r.experiment_id]) for r in page], token)

    def update_experiment(
        self, experiment_id: str, *, name: str | None, description: str | None, now: int
    ) -> None:
        exp_id = _exp_id(experiment_id)
        values: dict[str, object] = {"last_update_time": now}
        if description is not None:
            values["description"] = description
        try:
            with self._write() as conn:
                current = self._get(conn, exp_id)
                if name is not None and name != current.name:
                    values["name"] = name
                    values["name_skeleton"] = _checked_skeleton(conn, name, exclude=exp_id)
                conn.execute(
                    update(s.experiments)
                    .where(s.experiments.c.experiment_id == exp_id)
                    .values(**values)
                )
        except IntegrityError:
            raise self._name_conflict(name or "", exclude=exp_id) from None

    def set_experiment_lifecycle(
        self, experiment_id: str, *, stage: LifecycleStage, now: int, new_name: str | None = None
    ) -> None:
        exp_id = _exp_id(experiment_id)
        try:
            with self._write() as conn:
                self._set_lifecycle(conn, exp_id, stage=stage, now=now, new_name=new_name)
        except IntegrityError:
            if new_name is not None:
                raise self._name_conflict(new_name, exclude=exp_id) from None
            raise self._restore_conflict(exp_id) from None

    def _restore_conflict(self, exp_id: int) -> AlreadyExists:
        """Why restoring ``exp_id`` under its own name violated a unique index: an active
        experiment holds the name, or has a name that looks like it."""
        e = s.experiments.c
        with self._read() as conn:
            row = conn.execute(
                select(e.name, e.name_skeleton).where(e.experiment_id == exp_id)
            ).one()
            holder = conn.execute(
                select(e.experiment_id, e.name)
                .where(e.lifecycle_stage == _ACTIVE, e.experiment_id != exp_id)
                .where((e.name == row.name) | (e.name_skeleton == row.name_skeleton))
                .order_by((e.name == row.name).desc())
                .limit(1)
            ).first()
        if holder is not None and holder.name != row.name:
            why = (f"looks like the name {holder.name!r} of the active experiment "
                   f"{holder.experiment_id}")
        else:
            held_by = f" (id {holder.experiment_id})" if holder is not None else ""
            why = f"is taken by an active experiment{held_by}"
        return AlreadyExists(
            f"cannot restore experiment {exp_id}: its name {row.name!r} {why}; restore it "
            "under another name (new_name= in the SDK, --new-name in the CLI)",
            field="name",
        )

    def _set_lifecycle(
        self, conn: Connection, exp_id: int, *, stage: LifecycleStage, now: int,
        new_name: str | None,
    ) -> None:
        current = self._get(conn, exp_id)
        if current.lifecycle_stage is stage:
            raise InvalidState(
                f"experiment {exp_id} is already {stage.value}", field="experiment_id"
            )
        deleted = now if stage is LifecycleStage.DELETED else None
        values: dict[str, object] = {
            "lifecycle_stage": stage.value, "last_update_time": now, "deleted_time": deleted,
        }
        if new_name is not None and new_name != current.name:
            values["name"] = new_name
            values["name_skeleton"] = _checked_skeleton(conn, new_name, exclude=exp_id)
        conn.execute(
            update(s.experiments).where(s.experiments.c.experiment_id == exp_id).values(**values)
        )
        # Runs follow their experiment (MLflow semantics): deleting an experiment deletes
        # its active runs; restoring restores those deleted together with it.
        run_filter = s.runs.c.experiment_id == exp_id
        if stage is LifecycleStage.DELETED:
            conn.execute(
                update(s.runs)
                .where(run_filter, s.runs.c.lifecycle_stage == LifecycleStage.ACTIVE.value)
                .values(lifecycle_stage=stage.value, deleted_time=now)
            )
        else:
            conn.execute(
                update(s.runs)
                .where(run_filter, s.runs.c.deleted_time == current.deleted_time)
                .values(lifecycle_stage=stage.value, deleted_time=None)
            )

    def missing_experiments(self, experiment_ids: Sequence[str]) -> list[str]:
        wanted = [_exp_id(e) for e in experiment_ids]
        found: set[int] = set()
        with self._read() as conn:
            for start in range(0, len(wanted), 500):  # within every driver's parameter limit
                chunk = wanted[start : start + 500]
                found.update(conn.execute(select(s.experiments.c.experiment_id).where(
                    s.experiments.c.experiment_id.in_(chunk))).scalars())
        return [e for e, i in zip(experiment_ids, wanted, strict=True) if i not in found]

    def set_experiment_tag(self, experiment_id: str, key: str, value: str, *, now: int) -> None:
        exp_id = _exp_id(experiment_id)
        with self._write() as conn:
            self._get(conn, exp_id)
            stmt = self._insert(s.experiment_tags).values(
                experiment_id=exp_id, key=key, value=value
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["experiment_id", "key"], set_={"value": stmt.excluded.value}
                )
            )
            conn.execute(
                update(s.experiments)
                .where(s.experiments.c.experiment_id == exp_id)
                .values(last_update_time=now)
            )

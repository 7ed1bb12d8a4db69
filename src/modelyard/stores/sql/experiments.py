"""Experiments in SQL."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError

from modelyard.domain.entities import Experiment, LifecycleStage, ViewType
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


class SqlExperimentStore(SqlBase):
    def create_experiment(
        self, name: str, *, description: str, tags: dict[str, str], now: int
    ) -> str:
        try:
            with self._write() as conn:
                new_id = conn.execute(
                    s.experiments.insert()
                    .values(
                        name=name,
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
            raise _name_taken(name) from None
        return str(new_id)

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
        if name is not None:
            values["name"] = name
        if description is not None:
            values["description"] = description
        try:
            with self._write() as conn:
                self._get(conn, exp_id)
                conn.execute(
                    update(s.experiments)
                    .where(s.experiments.c.experiment_id == exp_id)
                    .values(**values)
                )
        except IntegrityError:
            raise _name_taken(name or "") from None

    def set_experiment_lifecycle(
        self, experiment_id: str, *, stage: LifecycleStage, now: int, new_name: str | None = None
    ) -> None:
        exp_id = _exp_id(experiment_id)
        try:
            with self._write() as conn:
                self._set_lifecycle(conn, exp_id, stage=stage, now=now, new_name=new_name)
        except IntegrityError:
            if new_name is not None:
                raise _name_taken(new_name) from None
            name = self.get_experiment(experiment_id).name
            holder = self.get_experiment_by_name(name)
            held_by = f" (id {holder.experiment_id})" if holder is not None else ""
            raise AlreadyExists(
                f"cannot restore experiment {experiment_id}: its name {name!r} is taken by an "
                f"active experiment{held_by}; restore it under another name "
                "(new_name= in the SDK, --new-name in the CLI)",
                field="name",
            ) from None

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
        if new_name is not None:
            values["name"] = new_name
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

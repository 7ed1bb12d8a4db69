"""Every limit of ``modelyard.domain.validation`` at its boundary, directly and through the
tracking service (the boundary every embedded and server request crosses)."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelyard.artifacts.blobs import FsspecBlobStore
from modelyard.domain import validation as v
from modelyard.domain.entities import LogBatch, Metric, Param, Tag
from modelyard.errors import AlreadyExists, InvalidArgument
from modelyard.stores.sql import SqlStores, open_sql_stores
from modelyard.tracking.service import TrackingService

# --------------------------------------------------------------------------- length limits

# (name, build a value of length n and validate it, limit, field named by the error)
LENGTH_LIMITS: list[tuple[str, Callable[[int], object], int, str]] = [
    ("key", lambda n: v.validate_key("k" * n, field="metric key"), v.MAX_KEY_LENGTH,
     "metric key"),
    ("metric key", lambda n: v.validate_metric(Metric("k" * n, 1.0, 0, 0)), v.MAX_KEY_LENGTH,
     "metric key"),
    ("param key", lambda n: v.validate_param(Param("k" * n, "v")), v.MAX_KEY_LENGTH,
     "param key"),
    ("tag key", lambda n: v.validate_tag(Tag("k" * n, "v")), v.MAX_KEY_LENGTH, "tag key"),
    ("param value", lambda n: v.validate_param(Param("p", "x" * n)), v.MAX_PARAM_VALUE_LENGTH,
     "param 'p' value"),
    ("tag value", lambda n: v.validate_tag(Tag("t", "x" * n)), v.MAX_TAG_VALUE_LENGTH,
     "tag 't' value"),
    ("experiment name", lambda n: v.validate_experiment_name("e" * n),
     v.MAX_EXPERIMENT_NAME_LENGTH, "name"),
    ("run name", lambda n: v.validate_run_name("r" * n), v.MAX_RUN_NAME_LENGTH, "run_name"),
    ("description", lambda n: v.validate_description("d" * n), v.MAX_DESCRIPTION_LENGTH,
     "description"),
    ("batch metrics",
     lambda n: v.validate_batch(LogBatch(metrics=tuple(Metric("m", 1.0, i, 0) for i in range(n)))),
     v.MAX_BATCH_METRICS, "metrics"),
    ("batch params",
     lambda n: v.validate_batch(LogBatch(params=tuple(Param(f"p{i}", "v") for i in range(n)))),
     v.MAX_BATCH_PARAMS, "params"),
    ("batch tags",
     lambda n: v.validate_batch(LogBatch(tags=tuple(Tag(f"t{i}", "v") for i in range(n)))),
     v.MAX_BATCH_TAGS, "tags"),
    ("max_results", lambda n: v.validate_max_results(n), v.MAX_RESULTS, "max_results"),
]


@pytest.mark.parametrize(("build", "limit", "field"), [r[1:] for r in LENGTH_LIMITS],
                         ids=[r[0] for r in LENGTH_LIMITS])
def test_exactly_at_the_limit_is_accepted_one_more_is_refused(
    build: Callable[[int], object], limit: int, field: str
) -> None:
    build(limit)
    with pytest.raises(InvalidArgument) as exc:
        build(limit + 1)
    assert exc.value.field == field
    assert str(limit) in exc.value.message or field in exc.value.message


def test_max_results_must_be_a_positive_integer() -> None:
    assert v.validate_max_results(1) == 1
    for bad in (0, -1, True, 1.0, "10", None):
        with pytest.raises(InvalidArgument) as exc:
            v.validate_max_results(bad)
        assert exc.value.field == "max_results"
    assert v.validate_max_results(5, limit=5) == 5
    with pytest.raises(InvalidArgument):
        v.validate_max_results(6, limit=5)


# --------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    "key",
    ["a", "A", "0", "_", "-", ".", "a b", "loss/train", "val.loss", "a-b_c.d e/f", "a..b",
     "a/./b", "x" * v.MAX_KEY_LENGTH],
)
def test_key_alphabet_accepts(key: str) -> None:
    assert v.validate_key(key, field="key") == key


@pytest.mark.parametrize(
    "key",
    ["", "a:b", "a*b", "a\\b", "a'b", 'a"b', "a`b", "a\tb", "a\nb", "a\x00b", "é", "ключ",
     "a\u00a0b", "a%b", "a;b", "/a", "a/", "a//b", "..", "a/../b", "../a", "a/..",
     None, 1, b"a"],
)
def test_key_alphabet_refuses(key: object) -> None:
    with pytest.raises(InvalidArgument) as exc:
        v.validate_key(key, field="param key")
    assert exc.value.field == "param key"


def test_every_key_kind_checks_the_alphabet() -> None:
    with pytest.raises(InvalidArgument, match="metric key"):
        v.validate_metric(Metric("a:b", 1.0, 0, 0))
    with pytest.raises(InvalidArgument, match="param key"):
        v.validate_param(Param("a:b", "x"))
    with pytest.raises(InvalidArgument, match="tag key"):
        v.validate_tag(Tag("a:b", "x"))
    # the batch path checks each distinct key (once), whatever the position
    points = (*(Metric("ok", 1.0, i, 0) for i in range(5)), Metric("bad:key", 1.0, 0, 0))
    with pytest.raises(InvalidArgument) as exc:
        v.validate_batch(LogBatch(metrics=points))
    assert exc.value.field == "metric key"


def test_system_tag_prefix() -> None:
    assert v.validate_tag(Tag("modelyard.source", "x")).key == "modelyard.source"
    with pytest.raises(InvalidArgument, match="reserved prefix"):
        v.validate_tag(Tag("modelyard.source", "x"), allow_system=False)
    assert v.validate_tag(Tag("modelyardx", "x"), allow_system=False).key == "modelyardx"


# --------------------------------------------------------------------------- text values


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: v.validate_param(Param("p", s)), "param 'p' value"),
        (lambda s: v.validate_tag(Tag("t", s)), "tag 't' value"),
        (v.validate_experiment_name, "name"),
        (v.validate_run_name, "run_name"),
        (v.validate_description, "description"),
    ],
    ids=["param", "tag", "experiment name", "run name", "description"],
)
def test_nul_and_non_strings_are_refused(call: Callable[[object], object], field: str) -> None:
    for bad in ("a\x00b", "\x00", 5, None, b"bytes"):
        with pytest.raises(InvalidArgument) as exc:
            call(bad)
        assert exc.value.field == field


def test_values_may_hold_anything_else() -> None:
    text = "ünï ✓ \t\n\r 'quotes' \"and\" \\ %_ \U0001f600"
    assert v.validate_param(Param("p", text)).value == text
    assert v.validate_tag(Tag("t", text)).value == text
    assert v.validate_description(text) == text
    assert v.validate_param(Param("p", "")).value == ""


@pytest.mark.parametrize("validate", [v.validate_experiment_name, v.validate_run_name])
def test_names_refuse_blank_and_control_characters(validate: Callable[[object], str]) -> None:
    for bad in ("", "   ", "\t\n", "a\x07b", "a\x1bb", "a\x7fb", "a\nb"):
        with pytest.raises(InvalidArgument):
            validate(bad)


# --------------------------------------------------------------------------- NFC names

NFD_E = "e\u0301"  # 'e' + combining acute: NFC is the single code point U+00E9
NFC_E = "\u00e9"


@pytest.mark.parametrize(("validate", "limit"), [
    (v.validate_experiment_name, v.MAX_EXPERIMENT_NAME_LENGTH),
    (v.validate_run_name, v.MAX_RUN_NAME_LENGTH),
], ids=["experiment", "run"])
def test_names_are_nfc_normalised_and_stripped(
    validate: Callable[[object], str], limit: int
) -> None:
    assert validate(f"caf{NFD_E}") == f"caf{NFC_E}"
    assert validate(f"  caf{NFC_E}\t") == f"caf{NFC_E}"
    assert validate("\u212b") == "\u00c5"  # ANGSTROM SIGN -> A WITH RING (a singleton)
    for text in ("x", NFD_E * 3, "a\u0308o\u0308"):
        out = validate(text)
        assert out == unicodedata.normalize("NFC", out)
    # The limit applies to the name as stored: an NFD name whose NFC form is exactly at the
    # limit is accepted (its two encodings are the same name), and stripped blanks don't count.
    assert validate(NFD_E * limit) == NFC_E * limit
    assert validate("  " + "n" * limit + "  ") == "n" * limit
    with pytest.raises(InvalidArgument):
        validate(NFD_E * (limit + 1))


@pytest.mark.parametrize(("validate", "limit"), [
    (v.validate_experiment_name, v.MAX_EXPERIMENT_NAME_LENGTH),
    (v.validate_run_name, v.MAX_RUN_NAME_LENGTH),
], ids=["experiment", "run"])
def test_a_name_that_grows_under_nfc_is_held_to_the_limit(
    validate: Callable[[object], str], limit: int
) -> None:
    """U+0958 DEVANAGARI QA is one code point whose NFC form is two: a name of ``limit`` of
    them is ``2 * limit`` once normalised, which the database column cannot hold."""
    grows = "\u0958"
    assert len(unicodedata.normalize("NFC", grows)) == 2
    assert validate(grows * (limit // 2)) == unicodedata.normalize("NFC", grows * (limit // 2))
    with pytest.raises(InvalidArgument):
        validate(grows * limit)


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("field", ["step", "timestamp"])
def test_step_and_timestamp_are_int64(field: str) -> None:
    def metric(value: object) -> Metric:
        kwargs: dict[str, object] = {"step": 0, "timestamp": 0, field: value}
        return Metric("m", 1.0, kwargs["step"], kwargs["timestamp"])  # type: ignore[arg-type]

    for ok in (v.MAX_INT64, v.MIN_INT64, 0, -1):
        assert getattr(v.validate_metric(metric(ok)), field) == ok
        assert getattr(v.validate_batch(LogBatch(metrics=(metric(ok),))).metrics[0], field) == ok
    for bad in (v.MAX_INT64 + 1, v.MIN_INT64 - 1, True, False, 1.0, "1", None):
        with pytest.raises(InvalidArgument) as exc:
            v.validate_metric(metric(bad))
        assert exc.value.field == f"metric 'm' {field}"
        with pytest.raises(InvalidArgument):
            v.validate_batch(LogBatch(metrics=(metric(bad),)))


def test_validate_int64() -> None:
    assert v.validate_int64(v.MAX_INT64, field="end_time") == v.MAX_INT64
    assert v.validate_int64(v.MIN_INT64, field="end_time") == v.MIN_INT64
    for bad in (v.MAX_INT64 + 1, v.MIN_INT64 - 1, True, 1.5, "1"):
        with pytest.raises(InvalidArgument) as exc:
            v.validate_int64(bad, field="end_time")
        assert exc.value.field == "end_time"


def test_metric_values() -> None:
    assert v.validate_metric(Metric("m", 1.5, 0, 0)).value == 1.5
    as_float = v.validate_metric(Metric("m", 3, 0, 0)).value  # type: ignore[arg-type]
    assert as_float == 3.0 and type(as_float) is float
    assert math.isnan(v.validate_metric(Metric("m", math.nan, 0, 0)).value)
    assert v.validate_metric(Metric("m", math.inf, 0, 0)).value == math.inf
    assert v.validate_metric(Metric("m", -math.inf, 0, 0)).value == -math.inf
    batch = v.validate_batch(LogBatch(metrics=(Metric("m", 7, 0, 0),)))  # type: ignore[arg-type]
    assert type(batch.metrics[0].value) is float


@pytest.mark.parametrize("bad", [True, False, "1.0", None, b"1", [1.0], complex(1, 0)])
def test_metric_value_must_be_a_number_and_bool_is_not(bad: object) -> None:
    with pytest.raises(InvalidArgument) as exc:
        v.validate_metric(Metric("m", bad, 0, 0))  # type: ignore[arg-type]
    assert exc.value.field == "metrics.value"
    assert "'m'" in exc.value.message
    with pytest.raises(InvalidArgument):
        v.validate_batch(LogBatch(metrics=(Metric("m", bad, 0, 0),)))  # type: ignore[arg-type]


def test_integer_metric_beyond_float_range_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="'m'"):
        v.validate_metric(Metric("m", 10**400, 0, 0))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        v.validate_batch(LogBatch(metrics=(Metric("m", 10**400, 0, 0),)))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- batches and ids


def test_duplicate_params_in_one_batch() -> None:
    same = LogBatch(params=(Param("p", "1"), Param("p", "1")))
    assert v.validate_batch(same).params == same.params
    with pytest.raises(InvalidArgument) as exc:
        v.validate_batch(LogBatch(params=(Param("p", "1"), Param("p", "2"))))
    assert exc.value.field == "params"


def test_batch_limits_count_each_kind_separately() -> None:
    batch = LogBatch(
        metrics=tuple(Metric("m", 1.0, i, 0) for i in range(v.MAX_BATCH_METRICS)),
        params=tuple(Param(f"p{i}", "v") for i in range(v.MAX_BATCH_PARAMS)),
        tags=tuple(Tag(f"t{i}", "v") for i in range(v.MAX_BATCH_TAGS)),
    )
    assert len(v.validate_batch(batch)) == len(batch)


@pytest.mark.parametrize("run_id", ["0" * 32, "0123456789abcdef" * 2])
def test_run_id_accepted(run_id: str) -> None:
    assert v.validate_run_id(run_id) == run_id


@pytest.mark.parametrize("run_id", ["0" * 31, "0" * 33, "A" * 32, "g" * 32, "", None, 5])
def test_run_id_refused(run_id: object) -> None:
    with pytest.raises(InvalidArgument) as exc:
        v.validate_run_id(run_id, field="parent_run_id")
    assert exc.value.field == "parent_run_id"


@pytest.mark.parametrize("exp_id", ["0", "1", "9" * 18])
def test_experiment_id_accepted(exp_id: str) -> None:
    assert v.validate_experiment_id(exp_id) == exp_id


@pytest.mark.parametrize("exp_id", ["", "9" * 19, "-1", "1.0", "²", "\u0661", " 1", "1\n", 1, None])
def test_experiment_id_refused(exp_id: object) -> None:
    with pytest.raises(InvalidArgument) as exc:
        v.validate_experiment_id(exp_id)
    assert exc.value.field == "experiment_id"


# --------------------------------------------------------------------------- the service


@pytest.fixture
def service(db_url: str, tmp_path: Path) -> Iterator[TrackingService]:
    stores: SqlStores = open_sql_stores(db_url)
    try:
        yield TrackingService(
            experiments=stores.experiments,
            runs=stores.runs,
            artifact_index=stores.artifacts,
            maintenance=stores.maintenance,
            blobs=FsspecBlobStore(str(tmp_path / "blobs")),
        )
    finally:
        stores.close()


def test_service_enforces_limits_before_writing(service: TrackingService) -> None:
    exp = service.create_experiment("e" * v.MAX_EXPERIMENT_NAME_LENGTH,
                                    description="d" * v.MAX_DESCRIPTION_LENGTH)
    assert len(exp.name) == v.MAX_EXPERIMENT_NAME_LENGTH
    with pytest.raises(InvalidArgument) as exc:
        service.create_experiment("f" * (v.MAX_EXPERIMENT_NAME_LENGTH + 1))
    assert exc.value.field == "name"
    with pytest.raises(InvalidArgument) as exc:
        service.create_experiment("g", description="d" * (v.MAX_DESCRIPTION_LENGTH + 1))
    assert exc.value.field == "description"
    assert service.list_experiments().items[-1].name == exp.name  # nothing else was created

    run = service.create_run(exp.experiment_id, run_name="r" * v.MAX_RUN_NAME_LENGTH,
                             user_id="u" * 256)
    with pytest.raises(InvalidArgument) as exc:
        service.create_run(exp.experiment_id, run_name="r" * (v.MAX_RUN_NAME_LENGTH + 1))
    assert exc.value.field == "run_name"
    with pytest.raises(InvalidArgument) as exc:
        service.create_run(exp.experiment_id, user_id="u" * 257)
    assert exc.value.field == "user_id"
    with pytest.raises(InvalidArgument) as exc:
        service.create_run(exp.experiment_id, start_time=v.MAX_INT64 + 1)
    assert exc.value.field == "start_time"
    with pytest.raises(InvalidArgument) as exc:
        service.create_run(exp.experiment_id, tags={"t": "x" * (v.MAX_TAG_VALUE_LENGTH + 1)})
    assert exc.value.field == "tag 't' value"

    # a batch with one bad item writes nothing at all
    good = tuple(Metric("m", 1.0, i, 0) for i in range(3))
    with pytest.raises(InvalidArgument) as exc:
        service.log_batch(run.id, LogBatch(
            metrics=good,
            params=(Param("p", "x" * v.MAX_PARAM_VALUE_LENGTH),),
            tags=(Tag("t", "x" * (v.MAX_TAG_VALUE_LENGTH + 1)),),
        ))
    assert exc.value.field == "tag 't' value"
    with pytest.raises(InvalidArgument) as exc:
        service.log_batch(run.id, LogBatch(
            metrics=tuple(Metric("m", 1.0, i, 0) for i in range(v.MAX_BATCH_METRICS + 1))))
    assert exc.value.field == "metrics"
    with pytest.raises(InvalidArgument):
        service.log_batch(run.id, LogBatch(metrics=(Metric("m", True, 0, 0),)))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        service.log_batch(run.id, LogBatch(metrics=(Metric("m", 1.0, v.MAX_INT64 + 1, 0),)))
    after = service.get_run(run.id)
    assert not after.params and not after.latest_metrics
    assert service.get_metric_history(run.id, "m") == []

    # exactly at every limit is stored and read back intact
    batch = LogBatch(
        metrics=(Metric("k" * v.MAX_KEY_LENGTH, 1.0, v.MAX_INT64, v.MIN_INT64),),
        params=(Param("p", "x" * v.MAX_PARAM_VALUE_LENGTH),),
        tags=(Tag("t", "y" * v.MAX_TAG_VALUE_LENGTH),),
    )
    assert service.log_batch(run.id, batch) is True
    stored = service.get_run(run.id)
    assert stored.params["p"] == "x" * v.MAX_PARAM_VALUE_LENGTH
    assert stored.tags["t"] == "y" * v.MAX_TAG_VALUE_LENGTH
    point = stored.latest_metrics["k" * v.MAX_KEY_LENGTH]
    assert (point.step, point.timestamp) == (v.MAX_INT64, v.MIN_INT64)


def test_service_validates_ids_and_batch_ids(service: TrackingService) -> None:
    for call in (
        lambda: service.get_run("not-a-run-id"),
        lambda: service.get_experiment("x"),
        lambda: service.search_runs(["1", "x"]),
        lambda: service.search_runs([]),
        lambda: service.search_runs("0"),  # type: ignore[arg-type]
        lambda: service.search_runs(["0"], view="everything"),
        lambda: service.search_runs(["0"], max_results=v.MAX_RESULTS + 1),
        lambda: service.update_run("0" * 32, status="DONE"),
    ):
        with pytest.raises(InvalidArgument):
            call()
    run = service.create_run("0")
    for bad in ("short", "x" * 65, "has space!", "--------", 12345678):
        with pytest.raises(InvalidArgument) as exc:
            service.log_batch(run.id, LogBatch(params=(Param("p", "1"),)), batch_id=bad)  # type: ignore[arg-type]
        assert exc.value.field == "batch_id"
    assert service.log_batch(run.id, LogBatch(params=(Param("p", "1"),)), batch_id="a" * 64)
    assert service.log_batch(run.id, LogBatch(params=(Param("p", "1"),)), batch_id="b-" * 4)


def test_service_stores_names_in_nfc(service: TrackingService) -> None:
    exp = service.create_experiment(f"  caf{NFD_E} ")
    assert exp.name == f"caf{NFC_E}"
    assert service.get_experiment_by_name(f"caf{NFC_E}").experiment_id == exp.experiment_id
    assert service.get_experiment_by_name(f"caf{NFD_E}").experiment_id == exp.experiment_id
    with pytest.raises(AlreadyExists):
        service.create_experiment(f"caf{NFC_E}")
    run = service.create_run(exp.experiment_id, run_name=f"r{NFD_E}")
    assert run.name == f"r{NFC_E}"
    assert service.update_run(run.id, run_name=f" s{NFD_E} ").name == f"s{NFC_E}"
    # a name at the limit only in NFC form fits the database column on every backend
    long_exp = service.create_experiment(NFD_E * v.MAX_EXPERIMENT_NAME_LENGTH)
    assert long_exp.name == NFC_E * v.MAX_EXPERIMENT_NAME_LENGTH
    # and one that grows under NFC beyond the column is refused as an argument, not a crash
    with pytest.raises(InvalidArgument):
        service.create_experiment("\u0958" * v.MAX_EXPERIMENT_NAME_LENGTH)
    with pytest.raises(InvalidArgument):
        service.create_run(exp.experiment_id, run_name="\u0958" * v.MAX_RUN_NAME_LENGTH)

"""Data validation with Great Expectations 1.x, called directly.

`dagster-ge` targets the pre-1.0 GX API and is broken against GX 1.x, so this
resource talks to GX itself: one ephemeral (in-memory, nothing written to disk)
data context per resource instance, a pandas and a Spark dataframe data source
in it, one dataframe asset + whole-dataframe batch definition per validated
asset, and `batch.validate(suite)`.

Suites are declared in code, next to the asset they guard::

    import great_expectations.expectations as gxe
    from resources.validation import Suite

    EVENTS = Suite(
        "events",
        [
            gxe.ExpectColumnToExist(column="user_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
            gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=["view", "purchase"]),
            gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0, max_value=10_000),
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
        ],
    )

and checked inside an asset check::

    outcome = validator.validate(frame, EVENTS, asset_name="events")
    return outcome.to_check_result(description="events schema and values")

The outcome carries, for every failing expectation, its type, column, kwargs,
unexpected count/percent and a few unexpected values, so a reviewer sees in the
Dagster UI exactly what failed.

Cost: importing `great_expectations` takes ~3 s (it imports pyspark when it is
installed); creating the ephemeral context takes milliseconds; a validation of
a small frame with five expectations ~50 ms, the first one in a process
slightly more (metric registry warm-up). The context and the per-asset data
assets are cached on the resource instance, so repeated validation only pays
for the metric computation itself.
"""

from __future__ import annotations

import copy
import json
import math
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

# GX must never phone home (analytics / version checks); this pipeline runs
# without network. Set before great_expectations is imported; an explicit
# setting by the operator wins.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import dagster as dg  # noqa: E402
import great_expectations as gx  # noqa: E402
from great_expectations.expectations.expectation import Expectation  # noqa: E402
from pydantic import PrivateAttr  # noqa: E402

__all__ = ["DataValidator", "Suite", "ValidationOutcome"]

# How many unexpected example values to keep per failing expectation: enough to
# see what is wrong, few enough to keep metadata small and avoid copying a
# whole column of (possibly sensitive) values into the event log.
MAX_EXAMPLES = 5
_PANDAS_SOURCE = "pandas_frames"
_SPARK_SOURCE = "spark_frames"


@dataclass(frozen=True, eq=False)
class Suite:
    """A named expectation suite declared in code.

    `expectations` are GX 1.x expectation objects
    (`great_expectations.expectations.Expect...`). They are never bound to a GX
    suite themselves: every validation works on deep copies, so one `Suite`
    can be validated any number of times, against any asset.
    """

    name: str
    expectations: tuple[Expectation, ...]

    def __init__(self, name: str, expectations: Iterable[Expectation]) -> None:
        expectations = tuple(expectations)
        if not name:
            raise ValueError("a Suite needs a non-empty name")
        if not expectations:
            raise ValueError(f"suite {name!r} has no expectations: it would pass on any data")
        for exp in expectations:
            if not isinstance(exp, Expectation):
                raise TypeError(
                    f"suite {name!r}: {exp!r} is not a great_expectations Expectation "
                    "(use great_expectations.expectations.Expect...(...))"
                )
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "expectations", expectations)

    @property
    def columns(self) -> tuple[str, ...] | None:
        """The columns the expectations read, in order, or None when one of them needs the whole table.

        A loader can read only these: row counts need no column, and an
        expectation about the table's columns themselves needs all of them.
        """
        named: dict[str, None] = {}
        for exp in self.expectations:
            fields = [getattr(exp, f, None) for f in ("column", "column_A", "column_B")]
            fields += list(getattr(exp, "column_list", None) or [])
            if not any(fields) and not exp.expectation_type.startswith("expect_table_row_count"):
                return None
            named.update(dict.fromkeys(f for f in fields if f))
        return tuple(named)

    def to_gx(self, *, name: str | None = None) -> gx.ExpectationSuite:
        """A fresh GX ExpectationSuite holding deep copies of the expectations.

        GX binds an expectation to the suite it is added to (and refuses to add
        it to a second one), so copies keep this Suite reusable.
        """
        copies = []
        for exp in self.expectations:
            dup = copy.deepcopy(exp)
            dup.id = None
            copies.append(dup)
        return gx.ExpectationSuite(name=name or self.name, expectations=copies)


@dataclass(frozen=True)
class ValidationOutcome:
    """What a validation found, in plain data (JSON-serialisable)."""

    asset_name: str
    suite_name: str
    success: bool
    evaluated: int
    failed: list[dict[str, Any]]

    @property
    def failed_count(self) -> int:
        return len(self.failed)

    def summary(self) -> str:
        if self.success:
            return f"{self.asset_name}: all {self.evaluated} expectations of suite {self.suite_name!r} passed"
        parts = []
        for item in self.failed:
            what = item["expectation_type"]
            if item.get("column"):
                what += f"({item['column']})"
            if item.get("exception"):
                what += f": error {item['exception']}"
            elif item.get("unexpected_count") is not None:
                what += f": {item['unexpected_count']} unexpected"
            parts.append(what)
        return (
            f"{self.asset_name}: {len(self.failed)} of {self.evaluated} expectations of suite "
            f"{self.suite_name!r} failed: " + "; ".join(parts)
        )

    def to_check_result(
        self,
        *,
        asset_key: dg.AssetKey | str | Sequence[str] | None = None,
        check_name: str | None = None,
        severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
        description: str | None = None,
        extra_metadata: dict[str, Any] | None = None,
    ) -> dg.AssetCheckResult:
        """An AssetCheckResult with `passed=success` and the evidence as metadata.

        `asset_key`/`check_name` are only needed when the check function guards
        several assets or checks (multi-asset checks); inside a plain
        `@asset_check` Dagster fills them in.
        """
        metadata: dict[str, Any] = {
            "suite": dg.MetadataValue.text(self.suite_name),
            "evaluated_expectations": dg.MetadataValue.int(self.evaluated),
            "failed_expectations": dg.MetadataValue.int(len(self.failed)),
            "passed_expectations": dg.MetadataValue.int(self.evaluated - len(self.failed)),
            "failures": dg.MetadataValue.json(self.failed),
            "summary": dg.MetadataValue.text(self.summary()),
        }
        if extra_metadata:
            metadata.update(extra_metadata)
        kwargs: dict[str, Any] = {}
        if asset_key is not None:
            kwargs["asset_key"] = dg.AssetKey.from_coercible(asset_key)
        if check_name is not None:
            kwargs["check_name"] = check_name
        return dg.AssetCheckResult(
            passed=self.success,
            severity=severity,
            description=description or self.summary(),
            metadata=metadata,
            **kwargs,
        )


class DataValidator(dg.ConfigurableResource):
    """Validates pandas or Spark DataFrames against code-declared suites with GX 1.x.

    `result_format` is GX's result format: BOOLEAN_ONLY, BASIC, SUMMARY or
    COMPLETE. SUMMARY (default) gives unexpected counts, percentages and a
    partial list of unexpected values without materialising full index lists.
    """

    result_format: str = "SUMMARY"

    _context: Any = PrivateAttr(default=None)
    _batch_definitions: dict = PrivateAttr(default_factory=dict)
    _lock: Any = PrivateAttr(default_factory=threading.RLock)
    _runs: int = PrivateAttr(default=0)

    # -- GX plumbing -----------------------------------------------------------------

    def _gx_context(self):
        """The ephemeral GX context, created on first use and kept for the instance."""
        if self._context is None:
            from great_expectations.data_context.types.base import ProgressBarsConfig

            context = gx.get_context(mode="ephemeral")
            # No analytics, no tqdm progress bars on stderr for every validation.
            context.config.analytics_enabled = False
            context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
            self._context = context
        return self._context

    def _data_source(self, kind: str):
        context = self._gx_context()
        name = _SPARK_SOURCE if kind == "spark" else _PANDAS_SOURCE
        try:
            return context.data_sources.get(name)
        except (KeyError, ValueError, LookupError):
            pass
        if kind == "spark":
            # persist=False: GX would otherwise call persist() on every validated
            # DataFrame and never unpersist it, so executor memory would grow
            # with every validation. `validate` persists for the duration of the
            # validation itself and releases afterwards. No spark_config: GX
            # reuses the session that made the DataFrame instead of restarting it.
            return context.data_sources.add_spark(name=name, persist=False)
        return context.data_sources.add_pandas(name=name)

    def _batch_definition(self, kind: str, asset_name: str):
        key = (kind, asset_name)
        batch_definition = self._batch_definitions.get(key)
        if batch_definition is None:
            source = self._data_source(kind)
            asset = source.add_dataframe_asset(name=asset_name)
            batch_definition = asset.add_batch_definition_whole_dataframe("whole_dataframe")
            self._batch_definitions[key] = batch_definition
        return batch_definition

    # -- public API ------------------------------------------------------------------

    def validate(self, data: Any, suite: Suite, *, asset_name: str) -> ValidationOutcome:
        """Validate a pandas or pyspark DataFrame against `suite`.

        Never raises for data that fails expectations (that is a failed
        outcome); an expectation that cannot even be evaluated (for example a
        missing column) is reported as a failure with its error message.
        """
        if not isinstance(suite, Suite):
            raise TypeError(f"suite must be a resources.validation.Suite, got {type(suite)!r}")
        if not asset_name:
            raise ValueError("asset_name must be a non-empty string")
        kind = _frame_kind(data)

        with self._lock:
            batch_definition = self._batch_definition(kind, asset_name)
            self._runs += 1
            gx_suite = suite.to_gx(name=f"{suite.name}#{self._runs}")
            persisted = False
            if kind == "spark" and not data.is_cached:
                data = data.persist()
                persisted = True
            try:
                batch = batch_definition.get_batch(batch_parameters={"dataframe": data})
                result = batch.validate(gx_suite, result_format=self.result_format)
            finally:
                if persisted:
                    data.unpersist()

        failed = [_describe_failure(r) for r in result.results if not r.success]
        failed.sort(key=lambda item: (item["expectation_type"], item.get("column") or ""))
        return ValidationOutcome(
            asset_name=asset_name,
            suite_name=suite.name,
            success=bool(result.success),
            evaluated=int(result.statistics.get("evaluated_expectations", len(result.results))),
            failed=failed,
        )


# -- helpers -----------------------------------------------------------------------


def _frame_kind(data: Any) -> str:
    module = type(data).__module__ or ""
    if module.startswith("pyspark."):
        from pyspark.sql import DataFrame as SparkDataFrame

        if isinstance(data, SparkDataFrame):
            return "spark"
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return "pandas"
    raise TypeError(
        f"DataValidator validates pandas or pyspark DataFrames, got {type(data).__module__}."
        f"{type(data).__name__}"
    )


def _exception_message(exception_info: Any) -> str | None:
    """GX reports errors either flat or as {metric_id: {...}}; return the first message."""
    if not exception_info:
        return None
    infos = [exception_info]
    if not (isinstance(exception_info, dict) and "raised_exception" in exception_info):
        infos = list(exception_info.values()) if isinstance(exception_info, dict) else []
    for info in infos:
        if isinstance(info, dict) and info.get("raised_exception"):
            return str(info.get("exception_message") or "expectation raised an exception")
    return None


def _describe_failure(result: Any) -> dict[str, Any]:
    config = result.expectation_config
    kwargs = {k: v for k, v in dict(config.kwargs).items() if k != "batch_id"}
    details = dict(result.result or {})
    item: dict[str, Any] = {
        "expectation_type": config.type,
        "column": kwargs.get("column"),
        "kwargs": _jsonable(kwargs),
        "unexpected_count": _jsonable(details.get("unexpected_count")),
        "unexpected_percent": _jsonable(details.get("unexpected_percent")),
        "partial_unexpected": _jsonable(list(details.get("partial_unexpected_list") or [])[:MAX_EXAMPLES]),
    }
    if "observed_value" in details:
        item["observed_value"] = _jsonable(details["observed_value"])
    message = _exception_message(result.exception_info)
    if message:
        item["exception"] = message
    return item


def _jsonable(value: Any) -> Any:
    """Coerce GX/numpy/pandas values into strict JSON (no NaN, no numpy scalars)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    item = getattr(value, "item", None)  # numpy / pandas scalars
    if callable(item):
        try:
            return _jsonable(item())
        except (TypeError, ValueError):
            pass
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    text = str(value)
    try:
        json.dumps(text)
    except (TypeError, ValueError):  # pragma: no cover - str() is always JSON-able
        text = repr(value)
    return text

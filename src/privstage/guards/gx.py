"""Great Expectations 1.x guard: the only privstage module that imports ``great_expectations``.

GX's API has changed shape three times; everything that touches it lives here so that an upgrade
touches one file. The rest of privstage sees :class:`GXSuiteGuard` (a
:class:`~privstage.guards.base.Guard`) and :func:`check_expectation_specs`.

Privacy: GX results can echo row values (``partial_unexpected_list``, ``observed_value``,
exception messages). This adapter asks GX for counts only (``BASIC`` with
``partial_unexpected_count=0`` and ``exclude_unexpected_values``) and then copies a whitelist of
numeric fields into outcomes; exception details are reduced to exception type names.

Side effects: each :meth:`GXSuiteGuard.check` uses an in-memory (ephemeral) GX context: nothing is
written to disk and GX 1.24 sends no analytics (its analytics client is gone; the PyPI version
checker is never called). The DataFrame is not persisted by GX (``persist=False``): caching rows,
which may spill raw values to local disk, is left to the caller.
"""

from __future__ import annotations

import difflib
import logging
import math
import numbers
import re
import threading
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from privstage.errors import SpecError, wrap_library_error
from privstage.guards.base import GuardContext, GuardOutcome

if TYPE_CHECKING:  # pragma: no cover
    from privstage.spec import ExpectationSpec

__all__ = ["GXSuiteGuard", "check_expectation_specs"]

#: Counts without values. ``exclude_unexpected_values`` keeps GX from filling value lists and
#: ``partial_unexpected_count=0`` turns its value query into ``LIMIT 0`` (no Spark job).
_RESULT_FORMAT: Mapping[str, Any] = {
    "result_format": "BASIC",
    "partial_unexpected_count": 0,
    "exclude_unexpected_values": True,
    "include_unexpected_rows": False,
    "return_unexpected_index_query": False,
}
#: Result fields copied into outcomes (numbers only).
_COUNT_FIELDS = ("element_count", "unexpected_count", "unexpected_percent", "missing_count", "missing_percent")
#: Expectation fields privstage sets itself; a spec may not override them.
_RESERVED_KWARGS = frozenset({"result_format", "catch_exceptions", "id", "rendered_content"})
#: Kwargs that name columns (the last three are privstage's anonymity expectations').
_COLUMN_KWARGS = ("column", "column_A", "column_B", "column_list", "quasi_identifiers", "sensitive", "columns")
#: Kwargs that carry no data value; the only ones reported for an expectation on a sensitive column.
_STRUCTURAL_KWARGS = frozenset(
    {*_COLUMN_KWARGS, "mostly", "strict_min", "strict_max", "ignore_row_if", "type_", "type_list", "condition_parser"}
    | {"k", "l", "kinds"}
)
_SPARK_ENGINE = "SparkDFExecutionEngine"
_EXCEPTION_HEADER = re.compile(r"^((?:[A-Za-z_]\w*\.)*([A-Z]\w*(?:Error|Exception|Exit|Interrupt|Failure)))(?::|$)")
_TRACEBACK_START = "Traceback (most recent call last):"

# GX keeps a process-wide "current project" (set by get_context) that ValidationDefinition.run reads,
# so validations in one process are serialized.
_GX_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------
# privstage's own expectations: k-anonymity, l-diversity, no plaintext PII
# --------------------------------------------------------------------------------------------
#: Expectation type -> the metric it depends on. The metrics run privstage's release guards
#: (:mod:`privstage.anonymize.guards`) on the batch, so GX and the stage's built-in guards compute the
#: same figures; results carry counts and sizes only.
ANONYMITY_EXPECTATIONS = {
    "expect_k_anonymity": "privstage.k_anonymity",
    "expect_l_diversity": "privstage.l_diversity",
    "expect_no_plaintext_pii": "privstage.plaintext_pii",
}
_REGISTERED: list[type] = []


def _guard_for(metric: str, kwargs: Mapping[str, Any]) -> Any:
    from privstage.anonymize.guards import DEFAULT_PII_KINDS, KAnonymityGuard, LDiversityGuard, NoPlaintextPIIGuard

    if metric == "privstage.k_anonymity":
        return KAnonymityGuard(tuple(kwargs["quasi_identifiers"]), int(kwargs["k"]))
    if metric == "privstage.l_diversity":
        return LDiversityGuard(tuple(kwargs["quasi_identifiers"]), str(kwargs["sensitive"]), int(kwargs["l"]))
    return NoPlaintextPIIGuard(tuple(kwargs["columns"]), tuple(kwargs.get("kinds") or DEFAULT_PII_KINDS))


def _register_privstage_expectations() -> None:
    """Define (once per process) the GX metrics and expectations behind ``expect_k_anonymity``,
    ``expect_l_diversity`` and ``expect_no_plaintext_pii``; defining a subclass registers it with GX."""
    if _REGISTERED:
        return
    from great_expectations.compatibility import pydantic
    from great_expectations.core.metric_domain_types import MetricDomainTypes
    from great_expectations.execution_engine import SparkDFExecutionEngine
    from great_expectations.expectations.expectation import BatchExpectation
    from great_expectations.expectations.metrics.metric_provider import metric_value
    from great_expectations.expectations.metrics.table_metric_provider import TableMetricProvider

    def spark_metric(name: str, keys: tuple[str, ...]) -> type:
        def _spark(cls, execution_engine, metric_domain_kwargs, metric_value_kwargs, metrics, runtime_configuration):
            df, _, _ = execution_engine.get_compute_domain(metric_domain_kwargs, domain_type=MetricDomainTypes.TABLE)
            guard = _guard_for(name, metric_value_kwargs)
            outcomes = guard.check(GuardContext(stage="gx", phase="after", data=df))
            return [(o.column, o.success, dict(o.details)) for o in outcomes]

        body = {"metric_name": name, "value_keys": keys, "_spark": metric_value(engine=SparkDFExecutionEngine)(_spark)}
        return type(f"_Privstage{name.split('.')[-1].title().replace('_', '')}Metric", (TableMetricProvider,), body)

    class _Anonymity(BatchExpectation):
        """Shared validation: every outcome of the metric must pass; counts go to the result."""

        metric: ClassVar[str] = ""

        def _validate(self, metrics, runtime_configuration=None, execution_engine=None):  # type: ignore[override]
            outcomes = metrics[self.metric]
            result: dict[str, Any] = {}
            details = [d for _, _, d in outcomes]
            if self.metric == "privstage.k_anonymity":
                result = {"observed_value": details[0]["smallest_class"],
                          "unexpected_count": details[0]["rows_in_small_classes"]}  # fmt: skip
            elif self.metric == "privstage.l_diversity":
                result = {"observed_value": details[0]["smallest_l"], "unexpected_count": details[0]["classes_below_l"]}
            else:
                found = sum(sum(d["matching_values"].values()) for d in details)
                result = {"observed_value": found, "unexpected_count": found}
            return {"success": all(ok for _, ok, _ in outcomes), "result": result}

    class ExpectKAnonymity(_Anonymity):
        """Every combination of the quasi-identifiers occurs at least ``k`` times (counts only in the result)."""

        quasi_identifiers: list[str] = pydantic.Field(min_items=1)
        k: int = pydantic.Field(ge=1)
        metric: ClassVar[str] = "privstage.k_anonymity"
        metric_dependencies = ("privstage.k_anonymity",)
        success_keys = ("quasi_identifiers", "k")
        args_keys = ("quasi_identifiers", "k")

    class ExpectLDiversity(_Anonymity):
        """Every class of the quasi-identifiers holds at least ``l`` distinct values of ``sensitive``."""

        quasi_identifiers: list[str] = pydantic.Field(min_items=1)
        sensitive: str
        l: int = pydantic.Field(ge=1)  # noqa: E741
        metric: ClassVar[str] = "privstage.l_diversity"
        metric_dependencies = ("privstage.l_diversity",)
        success_keys = ("quasi_identifiers", "sensitive", "l")
        args_keys = ("quasi_identifiers", "sensitive", "l")

    class ExpectNoPlaintextPii(_Anonymity):
        """No value of ``columns`` has the shape of a direct identifier (e-mail, SSN, card, IBAN, phone, IP)."""

        columns: list[str] = pydantic.Field(min_items=1)
        kinds: list[str] | None = None
        metric: ClassVar[str] = "privstage.plaintext_pii"
        metric_dependencies = ("privstage.plaintext_pii",)
        success_keys = ("columns", "kinds")
        args_keys = ("columns",)

    _REGISTERED.extend(
        [
            spark_metric("privstage.k_anonymity", ("quasi_identifiers", "k")),
            spark_metric("privstage.l_diversity", ("quasi_identifiers", "sensitive", "l")),
            spark_metric("privstage.plaintext_pii", ("columns", "kinds")),
            ExpectKAnonymity,
            ExpectLDiversity,
            ExpectNoPlaintextPii,
        ]
    )


# --------------------------------------------------------------------------------------------
# Spec checks (no data)
# --------------------------------------------------------------------------------------------
def _registry() -> dict[str, type]:
    """GX's expectation registry: snake-case type -> Expectation class (core and privstage's expectations)."""
    import great_expectations  # noqa: F401  (importing registers the core expectations)
    from great_expectations.expectations.registry import (
        get_expectation_impl,
        list_registered_expectation_implementations,
    )

    _register_privstage_expectations()

    return {
        name: get_expectation_impl(name)
        for name in list_registered_expectation_implementations()
        if name.startswith("expect_")
    }


def _spark_unsupported(cls: type) -> bool:
    """True when GX implements the expectation's metrics for engines other than Spark only.

    Expectations that compute their own dependencies (e.g. ``expect_column_values_to_be_of_type``)
    are given the benefit of the doubt.
    """
    # GX has no public "which engines implement this metric" query; the registry dict is stable
    # across 1.x and only used here.
    from great_expectations.expectations.registry import _registered_metrics

    if "get_validation_dependencies" in vars(cls):
        return False
    metrics = list(getattr(cls, "metric_dependencies", ()) or ())
    map_metric = getattr(cls, "map_metric", None)
    if map_metric:
        metrics.append(f"{map_metric}.condition")
    for metric in metrics:
        entry = _registered_metrics.get(metric)
        if entry is not None and _SPARK_ENGINE not in entry.get("providers", {}):
            return True
    return False


def _involved_columns(kwargs: Mapping[str, Any]) -> list[str]:
    columns: list[str] = []
    for key in _COLUMN_KWARGS:
        value = kwargs.get(key)
        if isinstance(value, str):
            columns.append(value)
        elif isinstance(value, list | tuple):
            columns.extend(v for v in value if isinstance(v, str))
    return columns


def _has_suite_parameter(value: Any) -> bool:
    if isinstance(value, Mapping):
        return "$PARAMETER" in value or any(_has_suite_parameter(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_suite_parameter(v) for v in value)
    return False


def _kwarg_problems(exc: Exception) -> list[str]:
    """Describe a GX (pydantic v1) validation error by kwarg name and error kind, without values."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return [f"GX rejected the kwargs ({type(exc).__name__})"]
    by_field: dict[str, list[dict[str, Any]]] = {}
    for err in errors():
        loc = err.get("loc") or ("__root__",)
        by_field.setdefault(str(loc[0]), []).append(err)
    problems = []
    for field, errs in by_field.items():
        # Every kwarg also accepts a {"$PARAMETER": ...} dict; that alternative's error is noise.
        relevant = [e for e in errs if e.get("type") != "type_error.dict"] or errs
        err = relevant[0]
        kind = str(err.get("type", ""))
        if kind == "value_error.extra":
            msg = "unknown kwarg for this expectation"
        elif kind in ("value_error", "type_error", "assertion_error") or not kind:
            # Custom validator messages may quote the offending value: do not repeat them.
            msg = "invalid value"
        else:
            msg = str(err.get("msg", "invalid value"))
        where = "kwargs" if field == "__root__" else f"kwarg '{field}'"
        problems.append(f"{where}: {msg}")
    return problems


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _problems_for(spec: ExpectationSpec, registry: Mapping[str, type], columns: Collection[str] | None) -> list[str]:
    """Everything wrong with one expectation spec (empty when it is fine)."""
    cls = registry.get(spec.type)
    if cls is None:
        return [f"unknown expectation type '{spec.type}'{_suggest(spec.type, registry)}"]
    problems: list[str] = []
    reserved = sorted(_RESERVED_KWARGS & spec.kwargs.keys())
    if reserved:
        problems.append(f"kwarg(s) {', '.join(map(repr, reserved))} are set by privstage and may not be given")
    parametrized = sorted(k for k, v in spec.kwargs.items() if _has_suite_parameter(v))
    if parametrized:
        problems.append(
            f"kwarg(s) {', '.join(map(repr, parametrized))} use $PARAMETER, which privstage does not supply"
        )
    if _spark_unsupported(cls):
        problems.append(f"'{spec.type}' is not implemented for Spark by Great Expectations")
    if not problems:
        try:
            cls(**spec.kwargs)
        except Exception as exc:  # pydantic v1 ValidationError or a GX configuration error
            problems.extend(_kwarg_problems(exc))
    if columns is not None:
        known = list(columns)
        for column in _involved_columns(spec.kwargs):
            if column not in known:
                problems.append(f"column '{column}' is not in the data{_suggest(column, known)}")
    return problems


def check_expectation_specs(
    expectations: Sequence[ExpectationSpec],
    *,
    stage: str,
    phase: str,
    columns: Collection[str] | None = None,
) -> None:
    """Validate expectation specs against Great Expectations without touching data.

    Checks that each type is a GX core expectation available on Spark, that GX accepts the kwargs,
    that privstage-controlled kwargs (``result_format``, ``catch_exceptions``, ``id``) are absent,
    and (when ``columns`` is given) that every referenced column exists.

    Args:
        expectations: the specs of one phase of one stage.
        stage: stage name, for messages.
        phase: ``expect_before`` or ``expect_after`` (``before``/``after`` are accepted too).
        columns: the columns of the DataFrame the phase will check, when known.

    Raises:
        SpecError: naming stage, phase, index and type of every faulty expectation, and the kwarg
            or column at fault (never a kwarg value).
    """
    phase_name = phase if phase.startswith("expect_") else f"expect_{phase}"
    registry = _registry()
    messages = []
    for index, spec in enumerate(expectations):
        for problem in _problems_for(spec, registry, columns):
            messages.append(f"{phase_name}[{index}] ({spec.type}): {problem}")
    if messages:
        raise SpecError("invalid expectation(s):\n  " + "\n  ".join(messages), stage=stage)


# --------------------------------------------------------------------------------------------
# Outcomes
# --------------------------------------------------------------------------------------------
def _number(value: Any) -> int | float | bool | None:
    """A JSON-safe number, or None when ``value`` is not a finite number."""
    if isinstance(value, bool):
        return value
    if hasattr(value, "item") and not isinstance(value, list | tuple | dict | str):  # numpy scalars
        try:
            value = value.item()
        except (TypeError, ValueError):
            return None
        if isinstance(value, bool):
            return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real | Decimal):
        result = float(value)
        return result if math.isfinite(result) else None
    return None


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    number = _number(value)
    return number if number is not None else str(value)


def _is_sensitive(kwargs: Mapping[str, Any], sensitive: frozenset[str]) -> bool:
    if not sensitive:
        return False
    if sensitive.intersection(_involved_columns(kwargs)):
        return True
    condition = kwargs.get("row_condition")
    return isinstance(condition, str) and any(name in condition for name in sensitive)


def _reported_kwargs(kwargs: Mapping[str, Any], sensitive: bool) -> tuple[dict[str, Any], list[str]]:
    """Kwargs for the outcome; for a sensitive expectation only the structural ones."""
    if not sensitive:
        return _json_safe(dict(kwargs)), []
    kept = {k: _json_safe(v) for k, v in kwargs.items() if k in _STRUCTURAL_KWARGS}
    return kept, sorted(k for k in kwargs if k not in _STRUCTURAL_KWARGS)


def _exception_types(traceback_text: str) -> list[str]:
    """Exception class names in a formatted traceback, outermost cause first (names only)."""
    names = []
    lines = traceback_text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() != _TRACEBACK_START or line != line.lstrip():
            continue
        # The exception header is the first unindented line after the frames.
        for header in lines[i + 1 :]:
            if header and not header[0].isspace():
                match = _EXCEPTION_HEADER.match(header)
                if match:
                    names.append(match.group(2))
                break
    return names


def _raised(exception_info: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """Exception records GX attached to one result (flat, or keyed by metric id)."""
    if not exception_info:
        return []
    if "raised_exception" in exception_info:
        return [exception_info] if exception_info.get("raised_exception") else []
    return [v for v in exception_info.values() if isinstance(v, Mapping) and v.get("raised_exception")]


def _error_details(records: list[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"error": <type>, "cause": <root type>}`` from GX exception records (no messages)."""
    types: list[str] = []
    for record in records:
        types.extend(_exception_types(str(record.get("exception_traceback") or "")))
    if not types:
        return {"error": "Exception"}
    details = {"error": types[-1]}
    if types[0] != types[-1]:
        details["cause"] = types[0]
    return details


def _outcome(
    guard: str,
    spec: ExpectationSpec,
    result: Any,
    sensitive_columns: frozenset[str],
) -> GuardOutcome:
    sensitive = _is_sensitive(spec.kwargs, sensitive_columns)
    kwargs, redacted = _reported_kwargs(spec.kwargs, sensitive)
    details: dict[str, Any] = {}
    column = spec.kwargs.get("column")
    column = column if isinstance(column, str) else None
    if result is None:
        details = {"error": "MissingResult"}
        success = False
    else:
        errors = _raised(result.exception_info)
        if errors:
            details = _error_details(errors)
            success = False
        else:
            success = bool(result.success)
            values = result.result or {}
            for name in _COUNT_FIELDS:
                number = _number(values.get(name))
                if number is not None:
                    details[name] = number
            observed = _number(values.get("observed_value"))
            if observed is not None and not sensitive:
                details["observed_value"] = observed
    details["kwargs"] = kwargs
    if redacted:
        details["kwargs_redacted"] = redacted
    return GuardOutcome(
        guard=guard, check=spec.type, success=success, blocking=spec.blocking, column=column, details=details
    )


# --------------------------------------------------------------------------------------------
# The guard
# --------------------------------------------------------------------------------------------
class GXSuiteGuard:
    """A Great Expectations suite run against a Spark DataFrame, one outcome per expectation.

    Args:
        name: guard name, reported in every outcome.
        expectations: the expectation specs (type, kwargs, blocking).
    """

    def __init__(self, name: str, expectations: Sequence[ExpectationSpec]) -> None:
        self.name = name
        self.expectations: tuple[ExpectationSpec, ...] = tuple(expectations)

    def __repr__(self) -> str:
        return f"GXSuiteGuard(name={self.name!r}, expectations={len(self.expectations)})"

    def _build_expectations(self, stage: str | None = None) -> list[Any]:
        """GX expectation objects for the specs, tagged with their index and set to catch errors."""
        registry = _registry()
        built = []
        for index, spec in enumerate(self.expectations):
            problems = _problems_for(spec, registry, None)
            if problems:
                raise SpecError(
                    f"guard '{self.name}' expectation [{index}] ({spec.type}): {'; '.join(problems)}", stage=stage
                )
            kwargs = dict(spec.kwargs)
            kwargs["meta"] = {**(kwargs.get("meta") or {}), "privstage_index": index}
            built.append(registry[spec.type](**kwargs, catch_exceptions=True))
        return built

    def check(self, ctx: GuardContext) -> list[GuardOutcome]:
        """Validate ``ctx.data`` with the suite.

        Returns:
            One outcome per expectation, in spec order. An expectation that raised inside GX is a
            failed outcome with ``details["error"]`` set to the exception type name.

        Raises:
            SpecError: an expectation spec is invalid (normally caught earlier by
                :func:`check_expectation_specs`).
            StageExecutionError: Great Expectations could not run at all.
        """
        if not self.expectations:
            return []
        expectations = self._build_expectations(ctx.stage)
        try:
            result = self._run(ctx.data, expectations)
        except SpecError:
            raise
        except Exception as exc:
            error = wrap_library_error(
                exc,
                f"Great Expectations could not run guard '{self.name}' ({ctx.phase}): {type(exc).__name__}",
                stage=ctx.stage,
            )
            raise error from error.__cause__
        by_index: dict[int, Any] = {}
        for item in result.results:
            meta = item.expectation_config.meta if item.expectation_config is not None else None
            index = (meta or {}).get("privstage_index")
            if isinstance(index, int):
                by_index[index] = item
        return [
            _outcome(self.name, spec, by_index.get(i), ctx.sensitive_columns)
            for i, spec in enumerate(self.expectations)
        ]

    @staticmethod
    def _run(data: Any, expectations: list[Any]) -> Any:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        # GX logs hundreds of INFO lines per run ("Skipping registering function ..."): they would
        # flood Airflow task logs.
        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        name = f"privstage_{uuid.uuid4().hex}"
        with _GX_LOCK:
            # A fresh in-memory context per run costs ~5 ms and leaves nothing behind (a reused one
            # would accumulate suites, definitions and stored results).
            context = gx.get_context(mode="ephemeral")
            context.variables.progress_bars = ProgressBarsConfig(globally=False)
            batch_definition = (
                context.data_sources.add_spark(name, persist=False)
                .add_dataframe_asset(name)
                .add_batch_definition_whole_dataframe(name)
            )
            suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
            validation = context.validation_definitions.add(
                gx.ValidationDefinition(name=name, data=batch_definition, suite=suite)
            )
            return validation.run(batch_parameters={"dataframe": data}, result_format=dict(_RESULT_FORMAT))

"""Error translation at the Airflow boundary: which privstage failures Airflow may retry.

The engine decides retryability (``PrivstageError.retryable``); this module only maps it onto
Airflow's vocabulary. A spec, guard, budget, integrity or HE-parameter failure would fail the same
way on every attempt, so it becomes :class:`AirflowFailException` (the task fails without using its
retries). Everything else propagates unchanged and Airflow retries it as configured.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from privstage.errors import PrivstageError, SpecError
from privstage_airflow._compat import AirflowFailException

if TYPE_CHECKING:  # pragma: no cover
    from pydantic import ValidationError

__all__ = ["airflow_error", "spec_error_from_validation", "translate_errors"]


def airflow_error(exc: BaseException) -> BaseException:
    """The exception Airflow should see for ``exc``.

    Args:
        exc: an exception raised while a privstage task ran.

    Returns:
        A new :class:`AirflowFailException` whose message is ``str(exc)`` (privstage messages never
        hold data or keys) for a non-retryable :class:`PrivstageError`; ``exc`` itself otherwise.
    """
    if isinstance(exc, PrivstageError) and not exc.retryable:
        return AirflowFailException(str(exc))
    return exc


@contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise non-retryable privstage errors as :class:`AirflowFailException` (chained ``from``)."""
    try:
        yield
    except PrivstageError as exc:
        translated = airflow_error(exc)
        if translated is exc:
            raise
        raise translated from exc


def spec_error_from_validation(exc: ValidationError, *, source: str) -> SpecError:
    """A :class:`SpecError` naming each invalid field of operator arguments, without their values."""
    from privstage.spec import STAGE_KINDS

    # pydantic puts the tag of a discriminated union into the location; users never wrote it.
    tags = {*STAGE_KINDS, "local", "files", "env"}
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    problems = []
    for err in errors:
        loc = err["loc"]
        # A sequence whose items failed also reports "too short": noise that hides the real error.
        if err["type"] == "too_short" and any(len(o["loc"]) > len(loc) and o["loc"][: len(loc)] == loc for o in errors):
            continue
        where = ".".join(str(part) for part in loc if part not in tags) or "<root>"
        problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return SpecError(f"invalid arguments of {source}:\n  " + "\n  ".join(problems))

"""The one place where privstage errors become Dagster failures.

Retryability is decided here, at the boundary: errors that a retry cannot fix (spec, guard,
budget, integrity) become ``Failure(allow_retries=False)``, which bypasses any RetryPolicy; the
retryable ones (a key service outage, a Spark failure) propagate unchanged so that the asset's
RetryPolicy applies.
"""

from __future__ import annotations

from typing import Any

from dagster import Failure

from privstage.errors import BudgetExceeded, PrivstageError

__all__ = ["failure_from"]


def failure_from(exc: PrivstageError) -> Failure:
    """A non-retryable Dagster Failure describing ``exc`` (raise it ``from exc``).

    The metadata repeats what the error's own ``to_dict`` says (type, stage, exit code) and, when
    the engine attached the run manifest, the failed stage's row counts and guard summary. privstage
    error messages name stages, columns, paths and key ids only, so they are safe to store.
    """
    metadata: dict[str, Any] = {
        "error": type(exc).__name__,
        "exit_code": exc.exit_code,
        "retryable": False,
    }
    if exc.stage:
        metadata["stage"] = exc.stage
    if isinstance(exc, BudgetExceeded):  # exact budget text: requested versus remaining, and where
        for name in ("ledger_key", "requested", "remaining"):
            if getattr(exc, name, None) is not None:
                metadata[name] = str(getattr(exc, name))
    manifest = getattr(exc, "manifest", None)
    if manifest is not None:
        stages = manifest.to_dict()["stages"]
        failed = next((s for s in stages if s["name"] == exc.stage), stages[-1] if stages else None)
        if failed is not None:
            metadata["guard_summary"] = failed["guard_summary"]
            metadata["output"] = failed["output"]
    return Failure(description=str(exc), metadata=metadata, allow_retries=False)

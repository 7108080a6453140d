"""The privstage exception tree.

Every error privstage raises on purpose is a :class:`PrivstageError`. Each class carries the CLI
exit code it maps to (one source of truth: the CLI, the Airflow and Dagster adapters and the Helm
chart's ``podFailurePolicy`` all read :data:`EXIT_CODES`) and whether an orchestrator may retry it.

Messages never contain key material or raw data values: they name stages, columns, datasets and
key ids only.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from privstage.guards.base import GuardReport

__all__ = [
    "EXIT_CODES",
    "BudgetExceeded",
    "GuardFailed",
    "HEParameterError",
    "IntegrityError",
    "KeyUnavailable",
    "OverflowRisk",
    "PrivstageError",
    "SpecError",
    "StageExecutionError",
    "exit_code_for",
    "wrap_library_error",
]


class PrivstageError(Exception):
    """Base class of every error privstage raises on purpose."""

    exit_code: int = 1
    retryable: bool = True

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        self.stage = stage
        prefix = f"[stage {stage}] " if stage else ""
        super().__init__(prefix + message)
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description for manifests and reports (never holds data or keys)."""
        return {
            "type": type(self).__name__,
            "message": str(self),
            "stage": self.stage,
            "retryable": self.retryable,
            "exit_code": self.exit_code,
        }


class SpecError(PrivstageError):
    """The pipeline spec or configuration is wrong; found before any data is read or written."""

    exit_code = 3
    retryable = False

    def __init__(self, message: str, *, stage: str | None = None, path: str | None = None) -> None:
        self.path = path
        if path:
            message = f"{path}: {message}"
        super().__init__(message, stage=stage)


class GuardFailed(PrivstageError):
    """A blocking guard rejected the data; the stage's output was not committed."""

    exit_code = 4
    retryable = False

    def __init__(self, message: str, *, stage: str | None = None, report: GuardReport | None = None) -> None:
        self.report = report
        super().__init__(message, stage=stage)


class BudgetExceeded(PrivstageError):
    """A privacy-budget request is larger than what remains in the ledger."""

    exit_code = 5
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        stage: str | None = None,
        requested: Any = None,
        remaining: Any = None,
        ledger_key: str | None = None,
    ) -> None:
        self.requested = requested
        self.remaining = remaining
        self.ledger_key = ledger_key
        super().__init__(message, stage=stage)


class KeyUnavailable(PrivstageError):
    """A key id (or key version) cannot be fetched from the key provider.

    Retryable: a key service outage may pass. The message names the key id, never key material.
    """

    exit_code = 6
    retryable = True

    def __init__(self, message: str, *, key_id: str | None = None, stage: str | None = None) -> None:
        self.key_id = key_id
        super().__init__(message, stage=stage)


class IntegrityError(PrivstageError):
    """A ciphertext or authenticated artifact failed verification."""

    exit_code = 7
    retryable = False


class HEParameterError(PrivstageError):
    """Homomorphic-encryption parameters are insecure or cannot meet the declared contract."""

    exit_code = 8
    retryable = False


class OverflowRisk(HEParameterError):
    """A homomorphic sum could exceed the plaintext modulus."""


class StageExecutionError(PrivstageError):
    """Spark, Great Expectations or another library failed while a stage ran. Retryable."""

    exit_code = 1
    retryable = True


# Ordered most specific first so that subclasses win.
_ORDER: tuple[type[PrivstageError], ...] = (
    OverflowRisk,
    HEParameterError,
    SpecError,
    GuardFailed,
    BudgetExceeded,
    KeyUnavailable,
    IntegrityError,
    StageExecutionError,
    PrivstageError,
)

#: Error class name -> CLI exit code. The Helm chart's podFailurePolicy is generated from this.
EXIT_CODES: dict[str, int] = {cls.__name__: cls.exit_code for cls in _ORDER}


def exit_code_for(exc: BaseException) -> int:
    """The CLI exit code for an exception (1 for anything that is not a PrivstageError)."""
    for cls in _ORDER:
        if isinstance(exc, cls):
            return cls.exit_code
    return 1


def wrap_library_error(exc: BaseException, message: str, *, stage: str | None = None) -> StageExecutionError:
    """A retryable StageExecutionError for a Spark / GX / TenSEAL failure.

    Library messages can quote data values (a failed cast names the value), so the original is
    kept on ``.original`` but not chained into tracebacks unless ``PRIVSTAGE_DEBUG=1``. Raise the
    result with ``raise wrap_library_error(...) from None`` (the debug mode re-attaches the cause).
    """
    error = StageExecutionError(message, stage=stage)
    error.original = exc  # type: ignore[attr-defined]
    if os.environ.get("PRIVSTAGE_DEBUG") == "1":
        error.__cause__ = exc
    return error

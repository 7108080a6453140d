"""The exception tree: exit codes, retryability, JSON-safe descriptions."""

from __future__ import annotations

import inspect
import json
from itertools import combinations

import pytest

from privstage import errors
from privstage.errors import (
    EXIT_CODES,
    BudgetExceeded,
    GuardFailed,
    HEParameterError,
    IntegrityError,
    KeyUnavailable,
    OverflowRisk,
    PrivstageError,
    SpecError,
    StageExecutionError,
    exit_code_for,
)

ERROR_CLASSES = [
    obj
    for obj in vars(errors).values()
    if inspect.isclass(obj) and issubclass(obj, PrivstageError) and obj.__module__ == errors.__name__
]

#: class, exit code, retryable: the table the CLI, the adapters and the Helm chart rely on.
CONTRACT = [
    (PrivstageError, 1, True),
    (StageExecutionError, 1, True),
    (SpecError, 3, False),
    (GuardFailed, 4, False),
    (BudgetExceeded, 5, False),
    (KeyUnavailable, 6, True),
    (IntegrityError, 7, False),
    (HEParameterError, 8, False),
    (OverflowRisk, 8, False),
]


def test_the_contract_table_covers_every_error_class() -> None:
    assert {cls for cls, _, _ in CONTRACT} == set(ERROR_CLASSES)
    assert set(EXIT_CODES) == {cls.__name__ for cls in ERROR_CLASSES}
    assert set(errors.__all__) == {cls.__name__ for cls in ERROR_CLASSES} | {
        "EXIT_CODES",
        "exit_code_for",
        "wrap_library_error",
    }


@pytest.mark.parametrize(("cls", "code", "retryable"), CONTRACT, ids=[c.__name__ for c, _, _ in CONTRACT])
def test_exit_code_and_retryable(cls: type[PrivstageError], code: int, retryable: bool) -> None:
    exc = cls("boom")
    assert EXIT_CODES[cls.__name__] == code
    assert exit_code_for(exc) == code
    assert (exc.exit_code, exc.retryable) == (code, retryable)
    assert exc.to_dict()["retryable"] is retryable


def test_exit_codes_are_distinct_except_intended_sharing() -> None:
    # Two classes may share a code only when one specialises the other and they agree on retrying.
    for a, b in combinations(ERROR_CLASSES, 2):
        if a.exit_code == b.exit_code:
            assert issubclass(a, b) or issubclass(b, a), (a, b)
            assert a.retryable == b.retryable, (a, b)


def test_exit_codes_are_usable_process_exit_codes() -> None:
    # 0 is success, 2 is argparse's usage error, 126+ are reserved by shells and signals.
    for code in EXIT_CODES.values():
        assert code in range(1, 126), code
        assert code != 2


def test_exit_code_for_picks_the_most_specific_class() -> None:
    class LedgerLocked(BudgetExceeded):
        """A subclass defined elsewhere keeps its parent's code."""

    assert exit_code_for(OverflowRisk("sum may wrap")) == 8
    assert exit_code_for(LedgerLocked("x")) == 5
    order = errors._ORDER
    for i, j in combinations(range(len(order)), 2):
        assert not issubclass(order[j], order[i]) or order[j] is order[i], (order[i], order[j])


@pytest.mark.parametrize("exc", [ValueError("x"), RuntimeError("x"), KeyboardInterrupt(), Exception()])
def test_exit_code_for_foreign_exceptions_is_1(exc: BaseException) -> None:
    assert exit_code_for(exc) == 1


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_stage_prefix_and_to_dict(cls: type[PrivstageError]) -> None:
    exc = cls("something went wrong", stage="pseudo")
    assert str(exc) == "[stage pseudo] something went wrong"
    assert exc.message == "something went wrong"
    assert exc.stage == "pseudo"
    described = json.loads(json.dumps(exc.to_dict()))
    assert described == {
        "type": cls.__name__,
        "message": "[stage pseudo] something went wrong",
        "stage": "pseudo",
        "retryable": cls.retryable,
        "exit_code": cls.exit_code,
    }
    assert str(cls("no stage")) == "no stage"
    assert cls("no stage").to_dict()["stage"] is None


def test_spec_error_names_the_path() -> None:
    exc = SpecError("unknown key", path="stages[0].colum", stage="pseudo")
    assert str(exc) == "[stage pseudo] stages[0].colum: unknown key"
    assert exc.path == "stages[0].colum"


def test_errors_carry_their_context_but_to_dict_stays_json_safe() -> None:
    report = object()  # a GuardReport in real use; never serialized by to_dict
    guard = GuardFailed("2 blocking checks failed", stage="pseudo", report=report)  # type: ignore[arg-type]
    assert guard.report is report
    budget = BudgetExceeded("need 1.0, 0.5 left", requested=1.0, remaining=0.5, ledger_key="clinic/eps")
    assert (budget.requested, budget.remaining, budget.ledger_key) == (1.0, 0.5, "clinic/eps")
    key = KeyUnavailable("key 'k1' not found", key_id="k1")
    assert key.key_id == "k1"
    for exc in (guard, budget, key):
        json.dumps(exc.to_dict())
        assert isinstance(exc, PrivstageError)
        assert isinstance(exc, Exception)


def test_wrapped_library_errors_do_not_chain_their_message(monkeypatch):
    from privstage.errors import wrap_library_error

    original = ValueError("cannot cast '078-05-1120' to INT")
    monkeypatch.delenv("PRIVSTAGE_DEBUG", raising=False)
    wrapped = wrap_library_error(original, "stage failed (ValueError)", stage="s")
    assert wrapped.original is original and wrapped.__cause__ is None and wrapped.retryable
    assert "078-05-1120" not in str(wrapped)
    monkeypatch.setenv("PRIVSTAGE_DEBUG", "1")
    assert wrap_library_error(original, "x").__cause__ is original

"""The budget ledger on SQLite and PostgreSQL: reserve -> commit | release, retries, races, secrets."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import pickle
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from privstage.budget import (
    SCHEMA_VERSION,
    BudgetLedger,
    Delta,
    Epsilon,
    InvalidBudgetValue,
    LedgerKey,
    LedgerUnavailable,
    PrivacyBudget,
    Reservation,
    ReservationLost,
    default_ledger_url,
)
from privstage.errors import BudgetExceeded, IntegrityError, SpecError, exit_code_for

DATASET, PERIOD = "visits", "2026"
TOTAL = PrivacyBudget(1, "1e-6")


def key(partition: str = "2026-03", *, stage: str = "dp_visits", dataset: str = DATASET) -> LedgerKey:
    return LedgerKey("clinic_visits", stage, dataset, PERIOD, partition)


@pytest.fixture()
def declared(ledger: BudgetLedger) -> BudgetLedger:
    """The ledger with TOTAL declared for (visits, 2026)."""
    ledger.declare(DATASET, PERIOD, TOTAL)
    return ledger


# ---------------------------------------------------------------------------------------------
# Declaring
# ---------------------------------------------------------------------------------------------
def test_declare_is_idempotent_and_never_changes_a_total(ledger: BudgetLedger) -> None:
    assert ledger.declared(DATASET, PERIOD) is None
    assert ledger.declare(DATASET, PERIOD, TOTAL) == TOTAL
    assert ledger.declare(DATASET, PERIOD, PrivacyBudget("2/2", "0.000001")) == TOTAL  # same value, other spelling
    with pytest.raises(SpecError, match=r"already has a declared budget of \(ε=1, δ=0.000001\)") as caught:
        ledger.declare(DATASET, PERIOD, PrivacyBudget(2, "1e-6"))
    assert "(ε=2, δ=0.000001)" in str(caught.value) and exit_code_for(caught.value) == 3
    assert ledger.declared(DATASET, PERIOD) == TOTAL
    ledger.declare(DATASET, "2027", PrivacyBudget(3))  # another period is another budget
    assert ledger.remaining(DATASET, "2027") == PrivacyBudget(3)
    with pytest.raises(InvalidBudgetValue):
        ledger.declare(DATASET, "2028", PrivacyBudget.zero())


def test_spending_from_an_undeclared_budget_is_a_spec_error(ledger: BudgetLedger) -> None:
    with pytest.raises(SpecError, match="no privacy budget is declared for dataset 'visits', period '2026'"):
        ledger.reserve(key(), PrivacyBudget("1/2"))
    with pytest.raises(SpecError, match="no privacy budget is declared"):
        ledger.remaining(DATASET, PERIOD)


# ---------------------------------------------------------------------------------------------
# Reserve -> commit | release
# ---------------------------------------------------------------------------------------------
def test_reserve_commit_release_cycle(declared: BudgetLedger) -> None:
    ledger = declared
    first = ledger.reserve(key("2026-01"), PrivacyBudget("1/3", "1e-7"))
    assert first.state == "reserved" and not first.committed and first.release is None
    assert ledger.remaining(DATASET, PERIOD) == PrivacyBudget("2/3", "9e-7")  # a reservation holds budget

    committed = ledger.commit(first, b"release-january")
    assert committed.committed and committed.release == b"release-january"
    assert committed.release_sha256 == hashlib.sha256(b"release-january").hexdigest()
    assert ledger.remaining(DATASET, PERIOD) == PrivacyBudget("2/3", "9e-7")

    second = ledger.reserve(key("2026-02"), PrivacyBudget("1/3"))
    assert ledger.remaining(DATASET, PERIOD) == PrivacyBudget("1/3", "9e-7")
    assert ledger.release(second) is True  # the run failed: its budget comes back
    assert ledger.release(second) is False  # idempotent
    assert ledger.remaining(DATASET, PERIOD) == PrivacyBudget("2/3", "9e-7")

    states = {str(s.key): (s.state, s.budget, s.release_size) for s in ledger.spends(DATASET, PERIOD)}
    assert states == {
        str(key("2026-01")): ("committed", PrivacyBudget("1/3", "1e-7"), len(b"release-january")),
        str(key("2026-02")): ("released", PrivacyBudget("1/3"), None),
    }
    # A released key may run again later and spend then.
    again = ledger.reserve(key("2026-02"), PrivacyBudget("1/4"))
    assert ledger.commit(again, b"feb").committed
    assert ledger.remaining(DATASET, PERIOD) == PrivacyBudget("5/12", "9e-7")


def test_thirds_fill_the_budget_exactly(declared: BudgetLedger) -> None:
    for month in ("01", "02", "03"):
        held = declared.reserve(key(f"2026-{month}"), PrivacyBudget("1/3"))
        declared.commit(held, month.encode())
    left = declared.remaining(DATASET, PERIOD)
    assert left.epsilon.is_zero and left == PrivacyBudget(Epsilon.zero(), "1e-6")
    with pytest.raises(BudgetExceeded):
        declared.reserve(key("2026-04"), PrivacyBudget("1e-12"))


def test_budget_exceeded_states_requested_remaining_and_key(declared: BudgetLedger) -> None:
    declared.commit(declared.reserve(key("2026-01"), PrivacyBudget("2/3")), b"jan")
    declared.reserve(key("2026-02"), PrivacyBudget("1/6"))  # reserved by another run: counts too
    wanted = key("2026-03")
    with pytest.raises(BudgetExceeded) as caught:
        declared.reserve(wanted, PrivacyBudget("1/4"))
    error = caught.value
    assert error.requested == PrivacyBudget("1/4")
    assert error.remaining == PrivacyBudget("1/6", "1e-6")
    assert error.ledger_key == str(wanted) == "clinic_visits/dp_visits/visits/2026/2026-03"
    message = str(error)
    for fragment in ("requested (ε=0.25, δ=0)", "remaining (ε=1/6, δ=0.000001)", str(wanted), "'visits'", "'2026'"):
        assert fragment in message
    assert error.retryable is False and exit_code_for(error) == 5 and error.stage == "dp_visits"
    # Exactly the remainder fits (no rounding at the boundary); δ is checked as well.
    with pytest.raises(BudgetExceeded, match=r"requested \(ε=1/6, δ=0\.000002\)"):
        declared.reserve(wanted, PrivacyBudget("1/6", "2e-6"))
    assert declared.reserve(wanted, PrivacyBudget("1/6", "1e-6")).state == "reserved"
    assert declared.spends(DATASET, PERIOD)[-1].key == wanted


def test_retry_after_commit_returns_the_same_bytes_and_spends_nothing(declared: BudgetLedger, ledger_url: str) -> None:
    release = os.urandom(4096)  # stands in for a noisy release: a second draw would differ
    first = declared.reserve(key(), PrivacyBudget("1/2"), attempt_id="airflow-try-1")
    declared.commit(first, release)
    remaining = declared.remaining(DATASET, PERIOD)

    with BudgetLedger(ledger_url) as reopened:  # a retry in a new process opens the ledger again
        retry = reopened.reserve(key(), PrivacyBudget("1/2"), attempt_id="airflow-try-2")
        assert retry.committed and retry.release == release
        assert retry.attempt_id == "airflow-try-1" and retry.budget == PrivacyBudget("1/2")
        assert reopened.remaining(DATASET, PERIOD) == remaining
        # The retry must not record a release of its own.
        with pytest.raises(ReservationLost, match="already committed by attempt airflow-try-1"):
            reopened.commit(
                Reservation(key(), PrivacyBudget("1/2"), "airflow-try-2", "reserved", retry.reserved_at), b"other"
            )
        # Committing the same bytes again from the committing attempt is a no-op.
        assert reopened.commit(first, release).release == release
        assert reopened.release(retry) is False  # a commit is never undone
    assert [s.state for s in declared.spends()] == ["committed"]
    assert declared.remaining(DATASET, PERIOD) == remaining


def test_reserve_is_idempotent_within_one_attempt(declared: BudgetLedger) -> None:
    first = declared.reserve(key(), PrivacyBudget("1/2"), attempt_id="a1")
    again = declared.reserve(key(), PrivacyBudget("1/2"), attempt_id="a1")
    assert again.attempt_id == "a1" and again.took_over_from is None
    assert declared.remaining(DATASET, PERIOD) == PrivacyBudget("1/2", "1e-6")
    assert declared.commit(first, b"x").committed


def test_a_dead_attempts_reservation_is_taken_over_and_fenced(declared: BudgetLedger) -> None:
    dead = declared.reserve(key(), PrivacyBudget("3/4"), attempt_id="try-1")
    # try-1 dies between noise and commit; try-2 asks for the same key: the reservation moves, one spend.
    retry = declared.reserve(key(), PrivacyBudget("3/4"), attempt_id="try-2")
    assert retry.state == "reserved" and retry.took_over_from == "try-1"
    assert declared.remaining(DATASET, PERIOD) == PrivacyBudget("1/4", "1e-6")
    # The old attempt (a zombie, if it was not dead) can neither free nor commit what it lost.
    assert declared.release(dead) is False
    with pytest.raises(ReservationLost, match="now held by attempt try-2") as caught:
        declared.commit(dead, b"zombie")
    assert caught.value.retryable is True
    declared.commit(retry, b"fresh")
    assert [(s.state, s.attempt_id) for s in declared.spends()] == [("committed", "try-2")]
    assert declared.reserve(key(), PrivacyBudget("3/4"), attempt_id="try-3").release == b"fresh"


def test_a_takeover_is_checked_against_the_budget_like_any_reservation(declared: BudgetLedger) -> None:
    declared.reserve(key("2026-01"), PrivacyBudget("1/2"))
    declared.reserve(key(), PrivacyBudget("1/4"), attempt_id="try-1")
    # Its own old reservation does not count against it; other keys do.
    assert declared.reserve(key(), PrivacyBudget("1/2"), attempt_id="try-2").took_over_from == "try-1"
    with pytest.raises(BudgetExceeded, match=r"remaining \(ε=0\.5, δ=0\.000001\)"):
        declared.reserve(key(), PrivacyBudget("3/4"), attempt_id="try-3")
    assert {s.attempt_id for s in declared.spends() if s.key == key()} == {"try-2"}


def test_abandon_frees_a_stale_reservation_but_never_a_commit(declared: BudgetLedger) -> None:
    declared.reserve(key("2026-01"), PrivacyBudget("1/2"))
    declared.commit(declared.reserve(key("2026-02"), PrivacyBudget("1/4")), b"feb")
    assert declared.abandon(key("2026-01")) is True
    assert declared.abandon(key("2026-02")) is False
    assert declared.remaining(DATASET, PERIOD) == PrivacyBudget("3/4", "1e-6")


def test_a_tampered_release_is_detected(declared: BudgetLedger, ledger_url: str) -> None:
    declared.commit(declared.reserve(key(), PrivacyBudget("1/2")), b"published figures")
    engine = sa.create_engine(ledger_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE privstage_spends SET release = :r"), {"r": b"altered figures"})
    engine.dispose()
    with pytest.raises(IntegrityError, match="does not match its recorded sha256"):
        declared.reserve(key(), PrivacyBudget("1/2"), attempt_id="retry")


def test_listings_for_budget_show(declared: BudgetLedger) -> None:
    declared.declare("claims", PERIOD, PrivacyBudget(2))
    declared.commit(declared.reserve(key("2026-01"), PrivacyBudget("1/2")), b"a")
    declared.reserve(key("2026-01", dataset="claims"), PrivacyBudget("1/3"))
    assert [s.key.dataset for s in declared.spends()] == ["claims", "visits"]
    assert [s.key.dataset for s in declared.spends(dataset="visits")] == ["visits"]
    assert declared.spends(period="2027") == []
    statuses = {s.dataset: s for s in declared.budgets()}
    assert statuses["claims"].reserved == PrivacyBudget("1/3") and statuses["claims"].remaining == PrivacyBudget("5/3")
    assert statuses["visits"].committed == PrivacyBudget("1/2")
    shown = json.loads(json.dumps([s.to_dict() for s in declared.spends()] + [b.to_dict() for b in declared.budgets()]))
    assert shown[1]["epsilon"] == "0.5" and shown[1]["release_size"] == 1 and shown[1]["partition"] == "2026-01"
    assert shown[2]["remaining"] == {"epsilon": "5/3", "delta": "0"}


def test_the_schema_is_versioned(ledger: BudgetLedger, ledger_url: str) -> None:
    ledger.declare(DATASET, PERIOD, TOTAL)  # first use creates the tables and the version row
    engine = sa.create_engine(ledger_url)
    with engine.begin() as conn:
        rows = conn.execute(sa.text("SELECT name, value FROM privstage_ledger_meta")).all()
        assert [tuple(r) for r in rows] == [("schema_version", str(SCHEMA_VERSION))]
        conn.execute(sa.text("UPDATE privstage_ledger_meta SET value = '99'"))
    engine.dispose()
    with BudgetLedger(ledger_url) as newer, pytest.raises(SpecError, match="schema version 99"):
        newer.remaining(DATASET, PERIOD)


# ---------------------------------------------------------------------------------------------
# Keys, URLs and secrets
# ---------------------------------------------------------------------------------------------
def test_ledger_keys_have_an_unambiguous_text_form() -> None:
    tricky = LedgerKey("pipe/line", "stage%2F", "visits", "2026", "2026-03-01T00:00:00+00:00")
    assert str(tricky) == "pipe%2Fline/stage%252F/visits/2026/2026-03-01T00:00:00+00:00"
    assert LedgerKey.parse(str(tricky)) == tricky
    assert LedgerKey.parse("p/s/d/2026") == LedgerKey("p", "s", "d", "2026")
    for bad in (("", "s", "d", "p"), ("p", "s", "d", "x" * 256), ("p", "s", "d", "p", "line\nbreak")):
        with pytest.raises(ValueError):
            LedgerKey(*bad)
    with pytest.raises(ValueError, match="4 or 5"):
        LedgerKey.parse("a/b/c")


def test_the_default_ledger_is_a_sqlite_file_in_the_state_dir(tmp_path: Path) -> None:
    url = default_ledger_url(tmp_path / ".privstage")
    assert url == f"sqlite:///{(tmp_path / '.privstage' / 'ledger.db').as_posix()}"
    with BudgetLedger(url) as ledger:
        ledger.declare(DATASET, PERIOD, TOTAL)
    assert (tmp_path / ".privstage" / "ledger.db").is_file()


SECRET = "Sup3r-Secret-Pw"  # noqa: S105 (a fake password that must never be echoed)


def test_passwords_never_appear_in_repr_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # Nothing listens on port 1: the connection fails whatever the password.
    ledger = BudgetLedger(f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:1/test", timeout=2)
    assert SECRET not in repr(ledger) and SECRET not in ledger.url and "***" in ledger.url
    with pytest.raises(LedgerUnavailable) as caught:
        ledger.remaining(DATASET, PERIOD)
    assert caught.value.retryable is True
    assert "postgres:***@127.0.0.1:1/test" in str(caught.value)
    texts = [str(caught.value), repr(caught.value), json.dumps(caught.value.to_dict())]
    for bad_url in (
        f"mysql://root:{SECRET}@db/ledger",
        f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:notaport/test",
        f"not a url {SECRET}",
        f"postgresql+nosuchdriver://postgres:{SECRET}@127.0.0.1/test",
    ):
        with pytest.raises(SpecError) as refused:
            BudgetLedger(bad_url)
        texts.append(str(refused.value))
    texts.extend(record.getMessage() for record in caplog.records)
    assert all(SECRET not in text for text in texts), texts
    with pytest.raises(TypeError, match="open one per process"):
        pickle.dumps(ledger)
    ledger.close()


def test_a_locked_sqlite_ledger_is_a_retryable_error(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with BudgetLedger(f"sqlite:///{path}", timeout=0.2) as ledger:
        ledger.declare(DATASET, PERIOD, TOTAL)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock past our timeout
        try:
            with pytest.raises(LedgerUnavailable, match="database is locked") as caught:
                ledger.reserve(key(), PrivacyBudget("1/2"))
            assert caught.value.retryable is True
            assert ledger.remaining(DATASET, PERIOD) == TOTAL  # readers are not blocked (WAL)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert ledger.reserve(key(), PrivacyBudget("1/2")).state == "reserved"


# ---------------------------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------------------------
RACERS = 6


def _race_for_the_last_budget(url: str, index: int, barrier: Any, results: Any) -> None:
    """One competing run (in its own spawned process): connect, wait for all, then reserve."""
    try:
        with BudgetLedger(url) as ledger:
            ledger.remaining(DATASET, PERIOD)  # connected, schema checked: the race is on reserve only
            barrier.wait(timeout=60)
            try:
                ledger.reserve(key(f"run-{index}"), PrivacyBudget("1/3"))
                results.put((index, "won", ""))
            except BudgetExceeded as exc:
                results.put((index, "exceeded", str(exc)))
    except BaseException as exc:  # reported to the parent, which fails the test
        results.put((index, "error", repr(exc)))


def _die_between_reserve_and_commit(url: str, attempt_id: str) -> None:
    """An attempt that reserves, 'draws noise', and is killed before it commits."""
    ledger = BudgetLedger(url)
    ledger.reserve(key(), PrivacyBudget("1/2"), attempt_id=attempt_id)
    os._exit(17)


def _spawn() -> Any:
    return multiprocessing.get_context("spawn")


def test_processes_racing_for_the_last_budget_exactly_one_wins(declared: BudgetLedger, ledger_url: str) -> None:
    for month in ("01", "02"):
        declared.commit(declared.reserve(key(f"2026-{month}"), PrivacyBudget("1/3")), b"earlier")
    context = _spawn()
    barrier, results = context.Barrier(RACERS), context.Queue()
    racers = [
        context.Process(target=_race_for_the_last_budget, args=(ledger_url, i, barrier, results)) for i in range(RACERS)
    ]
    for process in racers:
        process.start()
    outcomes = sorted(results.get(timeout=120) for _ in racers)
    for process in racers:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert [o for o in outcomes if o[1] == "error"] == []
    winners = [o for o in outcomes if o[1] == "won"]
    assert len(winners) == 1, outcomes
    assert all("remaining (ε=0, δ=0.000001)" in o[2] for o in outcomes if o[1] == "exceeded")
    assert declared.remaining(DATASET, PERIOD).epsilon.is_zero
    held = [s for s in declared.spends() if s.state == "reserved"]
    assert [str(s.key) for s in held] == [str(key(f"run-{winners[0][0]}"))]


def test_concurrent_first_use_creates_one_schema_and_one_winner(ledger_url: str) -> None:
    """Threads, each with its own ledger (own connections), start on an empty store at once."""
    barrier = threading.Barrier(RACERS)
    outcomes: list[str] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        with BudgetLedger(ledger_url) as ledger:
            barrier.wait(timeout=60)
            try:
                ledger.declare(DATASET, PERIOD, TOTAL)
                ledger.reserve(key(f"run-{index}"), PrivacyBudget("3/4"))
                outcome = "won"
            except BudgetExceeded:
                outcome = "exceeded"
            except BaseException as exc:
                outcome = f"error {exc!r}"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(outcomes) == ["exceeded"] * (RACERS - 1) + ["won"]


def test_an_attempt_killed_before_commit_leaves_one_spend_after_the_retry(
    declared: BudgetLedger, ledger_url: str
) -> None:
    process = _spawn().Process(target=_die_between_reserve_and_commit, args=(ledger_url, "killed-try-1"))
    process.start()
    process.join(timeout=120)
    assert process.exitcode == 17
    [left] = declared.spends()
    assert (left.state, left.attempt_id, left.release_size) == ("reserved", "killed-try-1", None)  # nothing published

    retry = declared.reserve(key(), PrivacyBudget("1/2"), attempt_id="try-2")
    assert retry.took_over_from == "killed-try-1"
    declared.commit(retry, b"the one release")
    assert declared.remaining(DATASET, PERIOD) == PrivacyBudget("1/2", "1e-6")  # spent once
    assert [(s.state, s.attempt_id) for s in declared.spends()] == [("committed", "try-2")]


# ---------------------------------------------------------------------------------------------
# Random sequences against a model
# ---------------------------------------------------------------------------------------------
@dataclass
class _ModelRow:
    state: str
    budget: PrivacyBudget
    attempt_id: str
    release: bytes | None = None


def test_random_reserve_commit_release_sequences_never_overspend(ledger: BudgetLedger) -> None:
    """Over random sequences (including zombie attempts), the ledger matches a model and the
    committed plus reserved total never exceeds the declared total."""
    keys = [key(f"2026-{m:02d}") for m in range(1, 6)]
    total = PrivacyBudget(1, "1e-6")
    amounts = st.builds(
        PrivacyBudget,
        st.sampled_from(["1/10", "1/6", "1/4", "1/3", "1/2", "3/4"]),
        st.sampled_from([0, "1e-7", "3e-7", "5e-7"]),
    )

    class LedgerModel(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.dataset = f"ds-{uuid.uuid4().hex[:12]}"  # a fresh budget per example, same store
            self.keys = [LedgerKey(k.pipeline, k.stage, self.dataset, k.period, k.partition) for k in keys]
            ledger.declare(self.dataset, PERIOD, total)
            self.model: dict[LedgerKey, _ModelRow] = {}
            self.handed_out: list[Reservation] = []

        def _used(self, exclude: LedgerKey | None = None) -> PrivacyBudget:
            return PrivacyBudget.total(
                row.budget for k, row in self.model.items() if k != exclude and row.state in ("reserved", "committed")
            )

        @rule(index=st.integers(0, 4), amount=amounts, new_attempt=st.booleans())
        def reserve(self, index: int, amount: PrivacyBudget, new_attempt: bool) -> None:
            k = self.keys[index]
            row = self.model.get(k)
            attempt = uuid.uuid4().hex if new_attempt or row is None else row.attempt_id
            fits = amount.fits_within(_remaining(total, self._used(exclude=k)))
            try:
                got = ledger.reserve(k, amount, attempt_id=attempt)
            except BudgetExceeded as exc:
                assert row is None or row.state != "committed"
                assert not fits and exc.requested == amount
                return
            if row is not None and row.state == "committed":
                assert got.committed and got.release == row.release and got.attempt_id == row.attempt_id
                return
            assert fits and got.state == "reserved"
            self.model[k] = _ModelRow("reserved", amount, attempt)
            self.handed_out.append(got)

        @rule(data=st.data())
        def commit(self, data: st.DataObject) -> None:
            if not self.handed_out:
                return
            held = data.draw(st.sampled_from(self.handed_out))
            payload = os.urandom(8)
            row = self.model[held.key]
            owns = row.state == "reserved" and row.attempt_id == held.attempt_id
            try:
                done = ledger.commit(held, payload)
            except ReservationLost:
                assert not owns
                return
            assert owns and done.release == payload
            row.state, row.release = "committed", payload

        @rule(data=st.data())
        def release(self, data: st.DataObject) -> None:
            if not self.handed_out:
                return
            held = data.draw(st.sampled_from(self.handed_out))
            row = self.model[held.key]
            owns = row.state == "reserved" and row.attempt_id == held.attempt_id
            assert ledger.release(held) is owns
            if owns:
                row.state = "released"

        @invariant()
        def never_over_the_total_and_as_modelled(self) -> None:
            [status] = ledger.budgets(self.dataset, PERIOD)
            assert PrivacyBudget.total([status.committed, status.reserved]).fits_within(total)
            assert status.remaining == _remaining(total, self._used())
            states = {s.key: (s.state, s.attempt_id) for s in ledger.spends(self.dataset)}
            assert states == {k: (row.state, row.attempt_id) for k, row in self.model.items()}

    run_state_machine_as_test(
        LedgerModel,
        settings=settings(
            max_examples=20,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


def _remaining(total: PrivacyBudget, used: PrivacyBudget) -> PrivacyBudget:
    """The model's remaining budget (never below zero in either component)."""
    eps = total.epsilon - used.epsilon if used.epsilon <= total.epsilon else Epsilon.zero()
    delta = total.delta - used.delta if used.delta <= total.delta else Delta.zero()
    return PrivacyBudget(eps, delta)

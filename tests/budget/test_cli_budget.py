"""`privstage budget show|abandon` and where the ledger URL comes from."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from sqlalchemy.engine import make_url

from privstage.budget import BudgetLedger, LedgerKey, PrivacyBudget, resolve_ledger_url
from privstage.cli import main
from privstage.errors import EXIT_CODES

KEY_A = LedgerKey("clinic_visits", "dp_release", "visits", "2026", "2026-01")
KEY_B = LedgerKey("clinic_visits", "dp_release", "visits", "2026", "2026-02")


def test_show_lists_budgets_and_spends_and_abandon_frees_a_reservation(ledger_url, capsys):
    with BudgetLedger(ledger_url) as ledger:
        ledger.declare("visits", "2026", PrivacyBudget("1", "1e-6"))
        committed = ledger.reserve(KEY_A, PrivacyBudget("1/4", "0"))
        ledger.commit(committed, b"release-bytes")
        ledger.reserve(KEY_B, PrivacyBudget("1/4", "0"))  # an attempt that died before commit

    assert main(["budget", "show", "--ledger", ledger_url, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    (status,) = shown["budgets"]
    assert (status["dataset"], status["period"]) == ("visits", "2026")
    assert Fraction(status["remaining"]["epsilon"]) == Fraction(1, 2)
    assert {(s["ledger_key"], s["state"]) for s in shown["spends"]} == {
        (str(KEY_A), "committed"),
        (str(KEY_B), "reserved"),
    }
    assert "release-bytes" not in json.dumps(shown)

    assert main(["budget", "show", "--ledger", ledger_url]) == 0
    text = capsys.readouterr().out
    assert "visits / 2026" in text and "remaining (ε=0.5, δ=" in text

    assert main(["budget", "abandon", str(KEY_B), "--ledger", ledger_url]) == 0
    assert "reservation released" in capsys.readouterr().out
    assert main(["budget", "abandon", str(KEY_A), "--ledger", ledger_url]) == 0
    assert "committed spends stay" in capsys.readouterr().out
    with BudgetLedger(ledger_url) as ledger:
        assert ledger.remaining("visits", "2026").epsilon.fraction == Fraction(3, 4)


def test_url_resolution_order(tmp_path, monkeypatch):
    url_file = tmp_path / "ledger-url"
    url_file.write_text("postgresql+psycopg://u:from-file@db:5432/x\n")
    env = {"PRIVSTAGE_LEDGER_URL_FILE": str(url_file)}
    assert resolve_ledger_url(tmp_path, environ=env) == "postgresql+psycopg://u:from-file@db:5432/x"
    env["PRIVSTAGE_LEDGER_URL"] = "sqlite:///from-env.db"
    assert resolve_ledger_url(tmp_path, environ=env) == "sqlite:///from-env.db"
    assert resolve_ledger_url(tmp_path, "sqlite:///explicit.db", environ=env) == "sqlite:///explicit.db"
    assert resolve_ledger_url(tmp_path, environ={}) == f"sqlite:///{(tmp_path / 'ledger.db').resolve().as_posix()}"


def test_unreadable_url_file_names_the_file_not_the_content(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PRIVSTAGE_LEDGER_URL_FILE", str(tmp_path / "missing"))
    monkeypatch.delenv("PRIVSTAGE_LEDGER_URL", raising=False)
    assert main(["budget", "show"]) == EXIT_CODES["SpecError"]
    assert "cannot read the ledger URL file" in capsys.readouterr().err


@pytest.mark.postgres
def test_show_never_prints_the_password(postgres_schema, capsys):
    url = make_url(postgres_schema()).set(password="canary-pw-93f1")  # noqa: S106  (trust auth ignores it)
    assert main(["budget", "show", "--ledger", url.render_as_string(hide_password=False)]) == 0
    out = capsys.readouterr().out
    assert "canary-pw-93f1" not in out
    assert "***" in out

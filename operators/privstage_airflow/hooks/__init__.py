"""privstage hooks."""

from __future__ import annotations

from privstage_airflow.hooks.privstage import ConnectionSettings, PrivstageHook, ledger_url_from_connection

__all__ = ["ConnectionSettings", "PrivstageHook", "ledger_url_from_connection"]

"""privstage hooks."""

from __future__ import annotations

from privstage_airflow.hooks.privstage import ConnectionSettings, PrivstageHook

__all__ = ["ConnectionSettings", "PrivstageHook"]

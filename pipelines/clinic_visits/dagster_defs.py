"""Dagster definitions for the clinic_visits pipeline: one asset per stage of ``pipeline.yaml``.

Run it locally with ``dagster dev -f pipelines/clinic_visits/dagster_defs.py`` (or ``dg dev``).
Dataset paths in the spec resolve against ``$PRIVSTAGE_BASE_DIR`` when it is set, else against
this folder. Keys come from the spec's ``keys`` section (the dev keyring); a deployment points
``KeyProviderResource`` elsewhere, e.g. ``provider="files"`` at a mounted Kubernetes Secret.

``pseudonymize_visits`` is one unpartitioned asset (the whole table); ``dp_visits_monthly`` is partitioned
by month and depends on it. Materializing partition ``2025-12-01`` publishes the December 2025 release
and charges ε = 0.5 to the 2025 budget in the ledger; materializing it again (or re-executing the run)
returns the committed release and spends nothing. The ledger is ``$PRIVSTAGE_LEDGER_URL`` (PostgreSQL in
production; Dagster stores the variable's name, never the URL or its password), else the file named by
``$PRIVSTAGE_LEDGER_URL_FILE``, else ``.privstage/ledger.db`` beside the data. The partitions span the
sample data (2024-01 to 2025-12); a deployment drops ``end_date``.
"""

import os
from pathlib import Path

import dagster as dg
from privstage_dagster import BudgetLedgerResource, KeyProviderResource, SparkResource, build_privstage_assets

SPEC_PATH = Path(__file__).resolve().parent / "pipeline.yaml"
MONTHS = dg.MonthlyPartitionsDefinition(start_date="2024-01-01", end_date="2026-01-01", timezone="UTC")

defs = dg.Definitions(
    assets=build_privstage_assets(
        SPEC_PATH, base_dir=os.environ.get("PRIVSTAGE_BASE_DIR") or None, dp_partitions_def=MONTHS
    ),
    resources={
        "spark": SparkResource(),
        "privstage_keys": KeyProviderResource(),
        # Unset URL: the engine's default (see above). An explicit one: url=dg.EnvVar("PRIVSTAGE_LEDGER_URL").
        "privstage_ledger": BudgetLedgerResource(),
    },
)

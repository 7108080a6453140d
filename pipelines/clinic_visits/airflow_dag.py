"""Airflow 3 DAG for the clinic_visits pipeline: pseudonymize the visits, then publish the month's DP release
and the k-anonymous research release; beside them, keep the raw visits encrypted at rest (``encrypt_visits``:
per-value AEAD, per-patient keys).

Put this file (or a symlink to it) in the DAGs folder; the spec is found next to the real file.
Dataset paths resolve against, in order: the run's ``base_dir`` param (``airflow dags trigger
--conf '{"base_dir": "/data/clinic"}'``), ``$PRIVSTAGE_BASE_DIR``, this folder.

**Why a monthly schedule with data intervals.** The DP stage releases one month per run and charges the
yearly budget in the ledger under (pipeline, stage, dataset, year, month). With
``CronDataIntervalTimetable("0 0 1 * *")`` the run that starts on 2026-01-01 covers
[2025-12-01, 2026-01-01): it starts once the month is complete and its logical date, 2025-12-01, is the
month it releases (the operators' default partition). A retry, a cleared task or a second run for the same
logical date gets the committed release back and spends nothing; a backfill
(``airflow backfill create --dag-id privstage_clinic_visits --from-date 2024-01-01 --to-date 2025-12-01``)
publishes each month once. A run triggered by hand for a logical date releases that date's month
(``airflow dags test privstage_clinic_visits 2025-12-01``). ``schedule=None`` with a month parameter would work
too, but then every run is someone's choice of month; the schedule makes "one release per month" the default.

The pseudonymize task re-pseudonymizes the whole visits table each month (``overwrite=True``: new visits
arrive, and keyed pseudonyms are deterministic, so existing rows keep their pseudonyms) and ``max_active_runs=1``
keeps one month's rewrite from running under another month's release. The ledger is the
``privstage_ledger_default`` connection when it exists (PostgreSQL in production), else
``$PRIVSTAGE_LEDGER_URL`` / ``$PRIVSTAGE_LEDGER_URL_FILE``, else ``.privstage/ledger.db`` under the base folder.
XComs are run manifests (paths, row counts, key ids, guard outcomes, ε spent, ledger key, release sha256),
never data, keys or the ledger's password.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, CronDataIntervalTimetable, Param
from privstage_airflow import AnonymizeOperator, DPAggregateOperator, EncryptOperator, PrivacyPipelineOperator

# resolve(): a symlink in the DAGs folder still finds the spec beside the real file.
SPEC_PATH = Path(__file__).resolve().parent / "pipeline.yaml"

with DAG(
    dag_id="privstage_clinic_visits",
    description="Pseudonymize clinic visits, then publish the month's differentially private release (privstage).",
    schedule=CronDataIntervalTimetable("0 0 1 * *", timezone="UTC"),
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["privstage", "privacy", "differential-privacy"],
    params={
        "base_dir": Param(
            "",
            type="string",
            description="Folder the spec's relative paths resolve against; empty: $PRIVSTAGE_BASE_DIR, "
            "else the spec's folder.",
        )
    },
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
) as dag:
    pseudonymize = PrivacyPipelineOperator(
        task_id="pseudonymize_visits",
        spec_path=str(SPEC_PATH),
        stages=["pseudonymize_visits"],
        base_dir="{{ params.base_dir }}",
        overwrite=True,
    )
    release = DPAggregateOperator(
        task_id="dp_visits_monthly",
        spec_path=str(SPEC_PATH),
        stage="dp_visits_monthly",
        base_dir="{{ params.base_dir }}",
    )
    # The research release (k-anonymity, l-diversity, proven on the written output) is rebuilt from each month's
    # pseudonymized table, hence overwrite.
    research = AnonymizeOperator(
        task_id="anonymize_research",
        spec_path=str(SPEC_PATH),
        stage="anonymize_research",
        base_dir="{{ params.base_dir }}",
        overwrite=True,
    )
    pseudonymize >> [release, research]
    # The raw visits at rest, encrypted per value under per-patient keys (independent of the release).
    EncryptOperator(
        task_id="encrypt_visits",
        spec_path=str(SPEC_PATH),
        stage="encrypt_visits",
        base_dir="{{ params.base_dir }}",
        overwrite=True,
    )

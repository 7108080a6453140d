"""Dagster definitions for one round of the multi-clinic sums: an asset per role's stage, wired across specs.

``key_holder/round_keys`` -> ``clinic_c0N/encrypt_sums`` (three clinics) -> ``aggregator/add_contributions``
-> ``key_holder/release``. Each asset runs one stage of its role's spec through the engine (see
:mod:`privstage_dagster.he`). Paths and key folders resolve against ``$PRIVSTAGE_BASE_DIR`` (prepare one with
``python pipelines/multi_clinic_sums/prepare.py WORKDIR``), else this folder. Run locally with
``PRIVSTAGE_BASE_DIR=WORKDIR dagster dev -f pipelines/multi_clinic_sums/dagster_defs.py``.
"""

import os
from pathlib import Path

import dagster as dg
from privstage_dagster import (
    BudgetLedgerResource,
    KeyProviderResource,
    SparkResource,
    he_aggregate_asset,
    he_decrypt_asset,
    he_encrypt_asset,
    he_keygen_asset,
)

HERE = Path(__file__).resolve().parent
CLINICS = ("c01", "c02", "c03")


def build_assets(base_dir: str | None = None) -> list[dg.AssetsDefinition]:
    """The round's assets; ``base_dir`` as the specs' base folder (default ``$PRIVSTAGE_BASE_DIR`` or this folder)."""
    base = base_dir or os.environ.get("PRIVSTAGE_BASE_DIR") or None
    keygen = he_keygen_asset(HERE / "key_holder.yaml", "round_keys", base_dir=base, key_prefix="key_holder")
    parties = [
        he_encrypt_asset(
            HERE / f"clinic_{clinic}.yaml",
            "encrypt_sums",
            base_dir=base,
            key_prefix=f"clinic_{clinic}",
            deps=[keygen.key],
        )
        for clinic in CLINICS
    ]
    hub = he_aggregate_asset(
        HERE / "aggregator.yaml",
        "add_contributions",
        base_dir=base,
        key_prefix="aggregator",
        deps=[keygen.key, *(p.key for p in parties)],
    )
    release = he_decrypt_asset(
        HERE / "key_holder.yaml", "release", base_dir=base, key_prefix="key_holder", deps=[hub.key]
    )
    return [keygen, *parties, hub, release]


# Each spec names its own key folder (keys/<role>) and state folder (.privstage/<role>): the resources keep
# the spec's choices; the ledger resource's default is each spec's own ledger (replay nonces live there).
RESOURCES = {
    "spark": SparkResource(),
    "privstage_keys": KeyProviderResource(),
    "privstage_ledger": BudgetLedgerResource(),
}

defs = dg.Definitions(assets=build_assets(), resources=RESOURCES)

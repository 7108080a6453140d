"""Dagster integration for privstage: one asset per pipeline stage, guards as blocking checks.

.. code-block:: python

    import dagster as dg
    from privstage_dagster import BudgetLedgerResource, KeyProviderResource, SparkResource, build_privstage_assets

    defs = dg.Definitions(
        assets=build_privstage_assets(
            "pipeline.yaml", dp_partitions_def=dg.MonthlyPartitionsDefinition(start_date="2024-01-01")
        ),
        resources={
            "spark": SparkResource(),
            "privstage_keys": KeyProviderResource(),
            "privstage_ledger": BudgetLedgerResource(url=dg.EnvVar("PRIVSTAGE_LEDGER_URL")),  # DP stages
        },
    )

Encrypt and decrypt stages are assets like any other; :class:`EncryptedParquetIOManager` stores any Spark
DataFrame asset encrypted at rest and loads it decrypted for the downstream assets granted its key.
"""

from privstage_dagster.factories import build_privstage_assets
from privstage_dagster.he import he_aggregate_asset, he_decrypt_asset, he_encrypt_asset, he_keygen_asset
from privstage_dagster.io_manager import EncryptedParquetIOManager
from privstage_dagster.resources import BudgetLedgerResource, KeyProviderResource, SparkResource

__all__ = [
    "BudgetLedgerResource",
    "EncryptedParquetIOManager",
    "KeyProviderResource",
    "SparkResource",
    "build_privstage_assets",
    "he_aggregate_asset",
    "he_decrypt_asset",
    "he_encrypt_asset",
    "he_keygen_asset",
]

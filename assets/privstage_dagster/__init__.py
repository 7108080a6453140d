"""Dagster integration for privstage: one asset per pipeline stage, guards as blocking checks.

.. code-block:: python

    import dagster as dg
    from privstage_dagster import KeyProviderResource, SparkResource, build_privstage_assets

    defs = dg.Definitions(
        assets=build_privstage_assets("pipeline.yaml"),
        resources={"spark": SparkResource(), "privstage_keys": KeyProviderResource()},
    )
"""

from privstage_dagster.factories import build_privstage_assets
from privstage_dagster.resources import KeyProviderResource, SparkResource

__all__ = ["KeyProviderResource", "SparkResource", "build_privstage_assets"]

"""Dagster definitions for the clinic_visits pipeline: one asset per stage of ``pipeline.yaml``.

Run it locally with ``dagster dev -f pipelines/clinic_visits/dagster_defs.py`` (or ``dg dev``).
Dataset paths in the spec resolve against ``$PRIVSTAGE_BASE_DIR`` when it is set, else against
this folder. Keys come from the spec's ``keys`` section (the dev keyring); a deployment points
``KeyProviderResource`` elsewhere, e.g. ``provider="files"`` at a mounted Kubernetes Secret.
"""

import os
from pathlib import Path

import dagster as dg
from privstage_dagster import KeyProviderResource, SparkResource, build_privstage_assets

SPEC_PATH = Path(__file__).resolve().parent / "pipeline.yaml"

defs = dg.Definitions(
    assets=build_privstage_assets(SPEC_PATH, base_dir=os.environ.get("PRIVSTAGE_BASE_DIR") or None),
    resources={"spark": SparkResource(), "privstage_keys": KeyProviderResource()},
)

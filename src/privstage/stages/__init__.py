"""Stage implementations: one module per stage kind.

Each module provides ``plan(stage, input_schema, keys, env=)`` (no data read; ``env`` is the engine's
:class:`~privstage.engine.PlanEnv`), ``builtin_guards(plan)`` (before and after guards it always runs) and
either ``apply(df, plan, spark=)`` (a lazy DataFrame: row-wise stages) or ``produce(df, plan, spark=, run=)``
with ``output_schema(plan, input_schema)`` (stages that compute a release on the driver from aggregates and
hook the engine's commit, such as ``dp_aggregate``). An optional ``narrow(df, plan)`` restricts the input
(a partition, derived and needed columns) before the pre-guards.

A stage kind whose spec has no single ``input`` (``input: None``: ``he_keygen`` reads no dataset,
``he_aggregate`` reads one per party from ``inputs``) provides ``read_inputs(stage, spec, spark)``
returning ``(description, reader)``: a text naming what it reads (for the plan and the report) and a
zero-argument callable returning the lazy DataFrame its pre-guards and ``produce`` receive (the engine
takes its schema at plan time and calls it again at run time; it must not collect data). Such stages
usually ``produce`` from what they read themselves.
Optional I/O hooks, for stages whose stored form differs from what Spark reads and writes by default
(``encrypt`` / ``decrypt``); a stage without them is read and written as plain Parquet:

* ``read_schema(stage, spark, path, keys, env=)``: the input's schema at planning, when a plain read cannot
  see it (an encrypted Parquet footer).
* ``input_options(plan) -> dict``: extra reader options for the stage's input at run time (decryption
  settings; never key material).
* ``write(df, staging, plan, spark=) -> dict | None``: write the staged output instead of the engine's
  ``df.write.parquet(staging)`` (write options, extra files such as a manifest beside the data, error
  translation); the returned dict is merged into the stage's report details.
* ``read_staged(staging, plan, spark=)``: read the staged output back for the post-guards.
* ``close(plan)``: release per-run resources (a materialized key directory) after the stage, whether it
  succeeded or failed.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from privstage.errors import SpecError

__all__ = ["STAGE_MODULES", "stage_module"]

STAGE_MODULES: dict[str, str] = {
    "pseudonymize": "privstage.stages.pseudonymize",
    "dp_aggregate": "privstage.stages.dp_aggregate",
    "he_keygen": "privstage.stages.he_keygen",
    "he_encrypt": "privstage.stages.he_encrypt",
    "he_aggregate": "privstage.stages.he_aggregate",
    "he_decrypt": "privstage.stages.he_decrypt",
    "encrypt": "privstage.stages.encrypt",
    "decrypt": "privstage.stages.decrypt",
    "anonymize": "privstage.stages.anonymize",
}


def stage_module(kind: str) -> ModuleType:
    """The implementation module of a stage kind."""
    try:
        return importlib.import_module(STAGE_MODULES[kind])
    except KeyError:
        raise SpecError(f"unknown stage kind '{kind}' (known: {', '.join(sorted(STAGE_MODULES))})") from None

"""Dagster asset factories for the roles of a homomorphic sum: key holder, party, aggregator.

Each role runs its own pipeline spec (its own keys, its own state); these factories make one asset of
one HE stage and let the caller wire the roles together with ``deps`` (asset keys), so one Dagster
deployment (or several, one per organisation) can show the round as a graph::

    keygen = he_keygen_asset("key_holder.yaml", "round_keys", key_prefix="key_holder")
    parties = [he_encrypt_asset(f"clinic_{c}.yaml", "encrypt_sums", key_prefix=f"clinic_{c}", deps=[keygen.key])
               for c in ("c01", "c02", "c03")]
    hub = he_aggregate_asset("aggregator.yaml", "add_contributions", key_prefix="aggregator",
                             deps=[p.key for p in parties])
    release = he_decrypt_asset("key_holder.yaml", "release", key_prefix="key_holder", deps=[hub.key])

The assets need the ``spark`` and ``privstage_keys`` resources; aggregator and decrypt assets also take
``privstage_ledger`` (:class:`~privstage_dagster.resources.BudgetLedgerResource`): its database keeps the
durable replay-protection nonces (and, for a noised release, the privacy budget). All checks run in the
engine; a non-retryable failure (``IntegrityError``, ``HEParameterError``, ``OverflowRisk``, spec and
guard failures) is ``Failure(allow_retries=False)``. Metadata carries public facts only (role, round id,
context fingerprint, counts): never contexts, ciphertexts or keys.
"""

# No ``from __future__ import annotations``: Dagster reads the compute function's annotations at definition time.

import os
from collections.abc import Sequence
from pathlib import Path

from dagster import AssetKey, AssetsDefinition, PartitionsDefinition, RetryPolicy

from privstage.errors import SpecError
from privstage.spec import HE_STAGE_KINDS, PipelineSpec, load_spec
from privstage_dagster.factories import _stage_asset

__all__ = ["he_aggregate_asset", "he_decrypt_asset", "he_encrypt_asset", "he_keygen_asset", "he_stage_asset"]


def he_stage_asset(
    spec: PipelineSpec | str | os.PathLike[str],
    stage: str,
    *,
    kind: str | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    key_prefix: str | Sequence[str] | None = None,
    group_name: str | None = None,
    deps: Sequence[AssetKey] = (),
    partitions_def: PartitionsDefinition | None = None,
    retry_policy: RetryPolicy | None = None,
) -> AssetsDefinition:
    """One asset running one HE stage of a spec, checked to be of ``kind`` (any HE kind when ``None``).

    Args:
        spec: a ``pipeline.yaml`` path or a parsed spec.
        stage: the stage's name.
        kind: the stage kind the role runs (``he_keygen``, ``he_encrypt``, ``he_aggregate``, ``he_decrypt``).
        base_dir: relative paths resolve against it (default ``$PRIVSTAGE_BASE_DIR``, else the spec's folder).
        key_prefix: prefix of the asset key (e.g. the role: ``clinic_c01``); the key ends with the stage name.
        group_name: Dagster asset group; default the pipeline name.
        deps: assets of the other roles this one needs (the key holder's round, the parties' contributions).
        partitions_def: partitions, when a round runs per partition.
        retry_policy: applies to retryable errors only.

    Raises:
        SpecError: the spec is invalid, the stage is unknown or not of ``kind``.
    """
    if isinstance(spec, PipelineSpec):
        pipeline = spec
    else:
        pipeline = load_spec(Path(spec), base_dir=base_dir if base_dir is not None else None)
    found = pipeline.stage(stage)
    allowed = (kind,) if kind else HE_STAGE_KINDS
    if found.kind not in allowed:
        raise SpecError(f"this asset factory runs {' / '.join(allowed)} stages; '{stage}' is {found.kind}", stage=stage)
    prefix = [key_prefix] if isinstance(key_prefix, str) else list(key_prefix or [])
    return _stage_asset(
        pipeline,
        found,
        prefix=prefix,
        group_name=group_name or pipeline.name,
        partitions_def=partitions_def,
        retry_policy=retry_policy,
        extra_deps=list(deps),
    )


def he_keygen_asset(spec: PipelineSpec | str | os.PathLike[str], stage: str, **kwargs) -> AssetsDefinition:
    """Key holder: the round's keys and public context (an ``he_keygen`` stage). See :func:`he_stage_asset`."""
    return he_stage_asset(spec, stage, kind="he_keygen", **kwargs)


def he_encrypt_asset(spec: PipelineSpec | str | os.PathLike[str], stage: str, **kwargs) -> AssetsDefinition:
    """Party: its encrypted per-group sums (an ``he_encrypt`` stage). See :func:`he_stage_asset`."""
    return he_stage_asset(spec, stage, kind="he_encrypt", **kwargs)


def he_aggregate_asset(spec: PipelineSpec | str | os.PathLike[str], stage: str, **kwargs) -> AssetsDefinition:
    """Aggregator: the parties' ciphertexts added, no secret key (``he_aggregate``). See :func:`he_stage_asset`."""
    return he_stage_asset(spec, stage, kind="he_aggregate", **kwargs)


def he_decrypt_asset(spec: PipelineSpec | str | os.PathLike[str], stage: str, **kwargs) -> AssetsDefinition:
    """Key holder: the verified, decrypted, rounded release (an ``he_decrypt`` stage). See :func:`he_stage_asset`."""
    return he_stage_asset(spec, stage, kind="he_decrypt", **kwargs)

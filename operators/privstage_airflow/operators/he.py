"""Operators for the roles of a homomorphic sum across parties: key holder, party, aggregator.

Each operator runs one HE stage of a ``pipeline.yaml`` and checks that the stage is of its role's kind,
so a DAG cannot quietly run, say, a decryption where an aggregation was meant:

========================  ===============  =================================================
operator                  stage kind       role
========================  ===============  =================================================
:class:`HEKeygenOperator`    ``he_keygen``    key holder: new keys, publish the public context
:class:`HEEncryptOperator`   ``he_encrypt``   party: encrypt per-group sums under the public key
:class:`HEAggregateOperator` ``he_aggregate`` aggregator: add the parties' ciphertexts
:class:`HEDecryptOperator`   ``he_decrypt``   key holder: verify, decrypt, release
========================  ===============  =================================================

All privacy logic is in the engine's stages; the operators only pick the stage and translate errors
(``IntegrityError``, ``HEParameterError`` / ``OverflowRisk``, spec and guard failures fail the task
without retries). The XCom is the run manifest plus an ``he`` summary (role, round id, context
fingerprint, parties): never ciphertexts, contexts or keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from privstage_airflow._compat import Context
from privstage_airflow.operators.pipeline import StageOperator

if TYPE_CHECKING:  # pragma: no cover
    pass

__all__ = [
    "HEAggregateOperator",
    "HEDecryptOperator",
    "HEEncryptOperator",
    "HEKeygenOperator",
    "HEStageOperator",
    "he_summary",
]


def he_summary(stage: Mapping[str, Any]) -> dict[str, Any] | None:
    """What an HE stage's manifest entry says publicly (role, round, fingerprint, parties); else ``None``."""
    he = (stage.get("details") or {}).get("he")
    if not he:
        return None
    keep = ("role", "round_id", "scheme", "context_fingerprint", "layout_id", "parties", "party_id", "aggregator_id")
    return {"stage": stage.get("name"), "status": stage.get("status"), **{k: he[k] for k in keep if k in he}}


class HEStageOperator(StageOperator):
    """Run one HE stage of a pipeline spec (the role's subclasses fix the stage kind).

    Args:
        spec_path: the pipeline spec file (templated).
        stage: the name of the stage to run (templated); it must be of the operator's kind.
        **kwargs: see :class:`PrivstageOperatorBase` (``base_dir``, ``report_path``, ``ledger_url``, ...) and
            Airflow's ``BaseOperator``. The ledger's database also holds the durable replay-protection nonces.
    """

    template_fields: Sequence[str] = ("spec_path", "stage", "base_dir", "report_path")
    ui_color = "#e3ecf2"
    stage_kind: ClassVar[str] = ""

    def allowed_kinds(self) -> tuple[str, ...]:
        from privstage.spec import HE_STAGE_KINDS

        return (self.stage_kind,) if self.stage_kind else HE_STAGE_KINDS

    def execute(self, context: Context) -> dict[str, Any]:
        """Run the stage; return the manifest with an ``he`` summary.

        Raises:
            AirflowFailException: spec, guard, integrity or HE parameter failures; no retry.
            PrivstageError: retryable failures (Spark, TenSEAL, the ledger database); Airflow retries them.
        """
        manifest = super().execute(context)
        entry = self.stage_entry(manifest)
        return {**manifest, "he": he_summary(entry)}


class HEKeygenOperator(HEStageOperator):
    """Key holder: create the round's keys and publish the public context (an ``he_keygen`` stage)."""

    stage_kind = "he_keygen"


class HEEncryptOperator(HEStageOperator):
    """Party: encrypt its per-group sums under the public context (an ``he_encrypt`` stage)."""

    stage_kind = "he_encrypt"


class HEAggregateOperator(HEStageOperator):
    """Aggregator: verify and add the parties' ciphertexts without any secret key (an ``he_aggregate`` stage)."""

    stage_kind = "he_aggregate"


class HEDecryptOperator(HEStageOperator):
    """Key holder: verify the aggregate, decrypt and release rounded sums (an ``he_decrypt`` stage)."""

    stage_kind = "he_decrypt"

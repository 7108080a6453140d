"""EncryptOperator / DecryptOperator: run one ``encrypt`` or ``decrypt`` stage of a pipeline spec as an Airflow task.

Thin: the engine validates the stage, fetches keys (fails closed on a missing KEK), writes, guards and
commits atomically; the operators check the stage's kind and translate errors. ``IntegrityError`` (a tampered,
swapped or missing ciphertext or file) is not retried: a retry would meet the same bytes. ``KeyUnavailable``
stays retryable, as the engine decides (a key service may be briefly unreachable). The XCom is the run
manifest (paths, row counts, key ids and versions, guard outcomes, the encryption summary): never data, never
keys, never wrapped keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from privstage_airflow.operators.pipeline import StageOperator

if TYPE_CHECKING:  # pragma: no cover
    pass

__all__ = ["DecryptOperator", "EncryptOperator"]


class EncryptOperator(StageOperator):
    """Run one ``encrypt`` stage of a pipeline spec (file mode: Parquet Modular Encryption; field mode: per-value
    AEAD, optionally with per-subject keys).

    Args:
        spec_path: the pipeline spec file (templated).
        stage: the name of an ``encrypt`` stage in it (templated).
        **kwargs: see :class:`PrivstageOperatorBase` (``base_dir``, ``report_path``, ``overwrite``, ...) and
            Airflow's ``BaseOperator``.

    Example:
        .. code-block:: python

            EncryptOperator(
                task_id="encrypt_visits",
                spec_path="/opt/pipelines/clinic_visits/pipeline.yaml",
                stage="encrypt_visits",
                overwrite=True,
            )
    """

    stage_kinds = ("encrypt",)
    ui_color = "#f2e3e3"


class DecryptOperator(StageOperator):
    """Run one ``decrypt`` stage of a pipeline spec: verify the sealed manifest and files, then decrypt.

    Args:
        spec_path: the pipeline spec file (templated).
        stage: the name of a ``decrypt`` stage in it (templated).
        **kwargs: see :class:`PrivstageOperatorBase` and Airflow's ``BaseOperator``.

    Raises (from ``execute``):
        AirflowFailException: ``IntegrityError`` (tampered data: nothing is written), spec and guard
            failures; no retry. ``KeyUnavailable`` (a shredded subject, a disabled key version) propagates.
    """

    stage_kinds = ("decrypt",)
    ui_color = "#e3ecf2"

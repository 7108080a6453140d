"""EncryptOperator / DecryptOperator: run one ``encrypt`` or ``decrypt`` stage of a pipeline spec as an Airflow task.

Thin: the engine validates the stage, fetches keys (fails closed on a missing KEK), writes, guards and
commits atomically; the operators check the stage's kind and translate errors. ``IntegrityError`` (a tampered,
swapped or missing ciphertext or file) is not retried: a retry would meet the same bytes. ``KeyUnavailable``
stays retryable, as the engine decides (a key service may be briefly unreachable). The XCom is the run
manifest (paths, row counts, key ids and versions, guard outcomes, the encryption summary): never data, never
keys, never wrapped keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from privstage.errors import SpecError
from privstage_airflow.operators.pipeline import PrivstageOperatorBase

if TYPE_CHECKING:  # pragma: no cover
    from privstage.spec import PipelineSpec

__all__ = ["DecryptOperator", "EncryptOperator"]


class _OneStageOperator(PrivstageOperatorBase):
    """Run one stage of a given kind from a pipeline spec file."""

    kind: ClassVar[str]
    template_fields: Sequence[str] = ("spec_path", "stage", "base_dir", "report_path", "partition")

    def __init__(self, *, spec_path: str, stage: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec_path = spec_path
        self.stage = stage

    def build_spec(self) -> PipelineSpec:
        """The spec, checked to hold a stage of this operator's kind under that name.

        Raises:
            SpecError: the spec is invalid, the stage is unknown or of another kind.
        """
        from privstage.spec import load_spec

        spec = load_spec(self.spec_path, base_dir=self.base_dir or None)
        stage = spec.stage(self.stage)  # SpecError for an unknown name
        if stage.kind != self.kind:
            raise SpecError(
                f"{type(self).__name__} '{self.task_id}' runs {self.kind} stages; '{self.stage}' is a {stage.kind} "
                "stage (use PrivacyPipelineOperator)",
                stage=self.stage,
            )
        return spec

    def selected_stages(self) -> Sequence[str]:
        return [self.stage]


class EncryptOperator(_OneStageOperator):
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

    kind = "encrypt"
    ui_color = "#f2e3e3"


class DecryptOperator(_OneStageOperator):
    """Run one ``decrypt`` stage of a pipeline spec: verify the sealed manifest and files, then decrypt.

    Args:
        spec_path: the pipeline spec file (templated).
        stage: the name of a ``decrypt`` stage in it (templated).
        **kwargs: see :class:`PrivstageOperatorBase` and Airflow's ``BaseOperator``.

    Raises (from ``execute``):
        AirflowFailException: ``IntegrityError`` (tampered data: nothing is written), spec and guard
            failures; no retry. ``KeyUnavailable`` (a shredded subject, a disabled key version) propagates.
    """

    kind = "decrypt"
    ui_color = "#e3ecf2"

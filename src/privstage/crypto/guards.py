"""Guards of the encrypt and decrypt stages (privstage Guards: aggregates in Spark, counts only).

* :class:`CiphertextWellFormedGuard` (after field encrypt): every value of each encrypted column is a
  privstage field ciphertext: not null, long enough, format byte 1 and the manifest's DEK version.
* :class:`NoPlaintextInOutputGuard` (after field encrypt): no value of an input column appears in the
  output column that replaced it (as UTF-8 bytes), counted with a semi join.
* :class:`FilesMatchManifestGuard` (after encrypt, before decrypt): the directory holds exactly the
  manifest's files, byte for byte; file mode: each file ends with ``PARE`` (encrypted footer).
* :class:`DecryptReadyGuard` (before decrypt): the manifest is present and every KEK version it names
  resolves in the key provider.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from privstage.crypto.envelope import EncryptionManifest, read_manifest, verify_files
from privstage.errors import IntegrityError, KeyUnavailable, SpecError
from privstage.guards.base import GuardContext, GuardOutcome
from privstage.keys.base import KeyProvider

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame

__all__ = ["CiphertextWellFormedGuard", "DecryptReadyGuard", "FilesMatchManifestGuard", "NoPlaintextInOutputGuard"]

_PME_MAGIC = b"PARE"


@dataclass(frozen=True)
class CiphertextWellFormedGuard:
    """Each encrypted column holds only well-formed field ciphertexts."""

    manifest: EncryptionManifest
    name: str = "encryption"

    def check(self, ctx: GuardContext) -> list[GuardOutcome]:
        from pyspark.sql import functions as F

        from privstage.crypto.field import OVERHEAD

        checks = []
        for col in self.manifest.columns:
            c = F.col(col.column)
            header = F.hex(F.substring(c, 1, 5))
            bad = c.isNull() | (F.length(c) < OVERHEAD) | (header != f"01{col.dek_version:08X}")
            checks.append(F.sum(bad.cast("long")).alias(col.column))
        row = ctx.data.select(*checks).first()
        out = []
        for col in self.manifest.columns:
            malformed = int((row[col.column] if row else 0) or 0)
            out.append(
                GuardOutcome(
                    self.name,
                    "well_formed_ciphertext",
                    malformed == 0,
                    column=col.column,
                    details={"malformed_count": malformed},
                )
            )
        return out


@dataclass(frozen=True)
class NoPlaintextInOutputGuard:
    """No input value of an encrypted column appears in the output column (needs ``ctx.input_data``)."""

    columns: tuple[str, ...]
    name: str = "encryption"

    def check(self, ctx: GuardContext) -> list[GuardOutcome]:
        from pyspark.sql import functions as F

        assert ctx.input_data is not None, "NoPlaintextInOutputGuard is an after-guard"

        def stacked(df: DataFrame, binary: bool) -> DataFrame:
            # (column index, value as bytes) for every encrypted column: one scan per side, one join in all.
            pairs = [
                F.struct(
                    F.lit(i).alias("c"),
                    (F.col(n).cast("binary") if binary else F.col(n).cast("string").cast("binary")).alias("v"),
                )
                for i, n in enumerate(self.columns)
            ]
            return df.select(F.explode(F.array(*pairs)).alias("p")).select("p.c", "p.v").where("v IS NOT NULL")

        raw = stacked(ctx.input_data, binary=False).distinct()
        produced = stacked(ctx.data, binary=True)
        rows = produced.join(raw, ["c", "v"], "left_semi").groupBy("c").count().collect()  # aggregates only
        leaked = {int(r["c"]): int(r["count"]) for r in rows}
        return [
            GuardOutcome(
                self.name,
                "no_plaintext_in_output",
                leaked.get(i, 0) == 0,
                column=n,
                details={"leaked": leaked.get(i, 0)},
            )
            for i, n in enumerate(self.columns)
        ]


@dataclass(frozen=True)
class FilesMatchManifestGuard:
    """The manifest's seal holds, the directory matches it (and, in file mode, every footer is encrypted)."""

    path: Path
    keys: KeyProvider = field(repr=False)
    name: str = "encryption"

    def check(self, ctx: GuardContext) -> list[GuardOutcome]:
        try:
            manifest = read_manifest(self.path)
            verify_files(self.path, manifest, self.keys)
        except (SpecError, IntegrityError, KeyUnavailable) as exc:
            return [GuardOutcome(self.name, "files_match_manifest", False, details={"error": type(exc).__name__})]
        outcomes = [GuardOutcome(self.name, "files_match_manifest", True, details={"files": len(manifest.files)})]
        if manifest.mode == "file":
            plain = 0
            for entry in manifest.files:
                with (Path(self.path) / entry.name).open("rb") as fh:
                    fh.seek(-4, 2)
                    plain += fh.read(4) != _PME_MAGIC
            outcomes.append(
                GuardOutcome(self.name, "encrypted_footer", plain == 0, details={"plaintext_footers": plain})
            )
        return outcomes


@dataclass(frozen=True)
class DecryptReadyGuard:
    """Before decrypt: the manifest is present and each KEK version it needs can be fetched."""

    path: Path
    keys: KeyProvider = field(repr=False)
    name: str = "encryption"

    def check(self, ctx: GuardContext) -> list[GuardOutcome]:
        try:
            manifest = read_manifest(self.path)
        except SpecError:
            return [GuardOutcome(self.name, "manifest_present", False)]
        outcomes = [GuardOutcome(self.name, "manifest_present", True)]
        needed = manifest.kek_versions() or {manifest.kek_id: []}
        for key_id, versions in sorted(needed.items()):
            missing = []
            for version in versions or [None]:
                try:
                    self.keys.get(key_id, version)
                except KeyUnavailable:
                    missing.append(version)
            outcomes.append(
                GuardOutcome(
                    self.name,
                    "keys_resolvable",
                    not missing,
                    details={"key_id": key_id, "missing_versions": [v for v in missing if v is not None]},
                )
            )
        return outcomes

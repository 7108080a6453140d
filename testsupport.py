"""Shared test data and helpers (imported by tests; a plain module, so that no conftest shadows it)."""

from __future__ import annotations

from pathlib import Path

# ---------------------------------------------------------------------------------------------
# A small workspace: dev keyring + tiny visits dataset + a spec writer
# ---------------------------------------------------------------------------------------------
CANARY_SSN = "078-05-1120"  # planted raw SSN; must never leak anywhere
TINY_ROWS = [
    # visit_id, patient_id, name, email, ssn, clinic_id, cost
    ("V1", "P001", "  Zoë Ångström ", "zoe@example.org", CANARY_SSN, "C01", 120.5),
    ("V2", "P002", "Jose\u0301 Müller", "JOSE@EXAMPLE.ORG", "219-09-9999", "C01", 80.0),
    ("V3", "P003", None, None, "457-55-5462", "C02", 42.0),
    ("V4", "P001", "ZOË ÅNGSTRÖM", "Zoe@Example.org", CANARY_SSN, "C02", 310.25),
    ("V5", "P004", "Straße", "strasse@example.org", "123-45-6789", "C02", 15.0),
]
TINY_SCHEMA = "visit_id string, patient_id string, name string, email string, ssn string, clinic_id string, cost double"


class Workspace:
    """A temp folder with a dev keyring, a tiny input dataset and helpers to write specs."""

    def __init__(self, root: Path, spark) -> None:
        from privstage.keys import LocalKeyring

        self.root = root
        self.spark = spark
        self.keyring_path = root / "keyring.json"
        self.keyring = LocalKeyring.init(self.keyring_path, ("pseudonym-key", "tenant-key"), warn=False)
        self.input = root / "data" / "visits"
        spark.createDataFrame(TINY_ROWS, TINY_SCHEMA).coalesce(1).write.parquet(str(self.input))

    def key(self, key_id: str = "pseudonym-key") -> bytes:
        return self.keyring.get(key_id).material()

    def spec_text(self, stages_yaml: str, *, name: str = "tiny") -> str:
        return f"name: {name}\nkeys: {{provider: local, path: {self.keyring_path}}}\nstages:\n{stages_yaml}"

    def write_spec(self, stages_yaml: str, *, name: str = "tiny", file: str = "pipeline.yaml") -> Path:
        path = self.root / file
        path.write_text(self.spec_text(stages_yaml, name=name), encoding="utf-8")
        return path

    def load(self, stages_yaml: str, **kw):
        from privstage.spec import load_spec

        return load_spec(self.write_spec(stages_yaml, **kw))

    def read(self, rel: str):
        return self.spark.read.parquet(str(self.root / rel))


PSEUDO_STAGE = """\
  - name: pseudo
    kind: pseudonymize
    input: {path: data/visits}
    output: {path: out/visits}
    sensitive_columns: [ssn, name, email]
    columns:
      - {column: patient_id, key_id: pseudonym-key}
      - {column: ssn, key_id: pseudonym-key}
      - {column: name, key_id: pseudonym-key, case_fold: true, bits: 128, encoding: base64url,
         output_column: name_pseudonym}
"""

"""privstage.crypto's curated API and its import boundary."""

from __future__ import annotations

import json
import subprocess
import sys

import privstage.crypto

EXPECTED = {
    "ALGORITHM",
    "ENCRYPTION_MANIFEST",
    "ColumnKey",
    "EncryptionManifest",
    "EncryptionSpec",
    "FieldEncryptionSpec",
    "FileEncryptionSpec",
    "FileEntry",
    "ManifestSeal",
    "SubjectKeyStore",
    "WrappedKey",
    "check_seal",
    "parse_encryption_spec",
    "read_manifest",
    "rewrap",
    "seal_manifest",
    "unwrap_dek",
    "verify_files",
    "wrap_dek",
    "write_manifest",
}


def test_exported_names_are_the_intended_ones():
    assert set(privstage.crypto.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(privstage.crypto, name) is not None, name


def test_envelope_layer_imports_without_spark_or_arrow():
    code = "import privstage.crypto, sys, json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not {"pyspark", "pyarrow", "airflow", "dagster"} & loaded

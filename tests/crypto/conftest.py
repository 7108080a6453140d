"""Fixtures of the encryption tests: a key directory (the FileKeyProvider layout) and clinic_visits rows."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from privstage.keys import FileKeyProvider
from privstage.sample_data import CLINIC_VISITS_SCHEMA, generate_clinic_visits_pandas

VISIT_ROWS = 240


def add_key_version(directory: Path, key_id: str, version: int) -> bytes:
    """Write a random KEK version into a key directory; returns its bytes (for canary checks)."""
    material = os.urandom(32)
    path = directory / f"{key_id}.v{version}"
    path.write_text(base64.b64encode(material).decode())
    path.chmod(0o600)
    return material


@pytest.fixture()
def key_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    add_key_version(directory, "visits-kek", 1)
    return directory


@pytest.fixture()
def keys(key_dir: Path) -> FileKeyProvider:
    return FileKeyProvider(key_dir)


@pytest.fixture(scope="session")
def visits_pdf():
    return generate_clinic_visits_pandas(VISIT_ROWS)


@pytest.fixture(scope="session")
def visits(spark, visits_pdf):
    """clinic_visits sample rows in two partitions (so datasets have two part files), cached."""
    return spark.createDataFrame(visits_pdf, schema=CLINIC_VISITS_SCHEMA).repartition(2, "visit_id").cache()


def secret_encodings(secret: bytes) -> list[str]:
    """The forms a leaked key would take in text: hex (both cases), base64 (std / url-safe, padded or
    not), Spark's X'..' literal and Python's bytes repr."""
    b64 = base64.b64encode(secret).decode()
    url = base64.urlsafe_b64encode(secret).decode()
    return [secret.hex(), secret.hex().upper(), b64, b64.rstrip("="), url, url.rstrip("="), repr(secret)[2:-1]]


@pytest.fixture()
def leaks():
    """leaks(text, secrets) -> the encodings of any secret found in text (empty list when clean)."""

    def find(text: str, secrets: list[bytes]) -> list[str]:
        return [form[:6] + "..." for s in secrets for form in secret_encodings(s) if form in text]

    return find


@pytest.fixture()
def add_key():
    return add_key_version


@pytest.fixture()
def event_log_text(spark_event_log_dir: Path):
    """event_log_text() -> this run's Spark event log so far, decompressed (Spark 4 writes zstd frames)."""
    import io

    import zstandard

    def read() -> str:
        parts = []
        for path in sorted(spark_event_log_dir.rglob("events_*")):
            if path.name.startswith("."):
                continue
            data = path.read_bytes()
            if path.suffix != ".zstd":
                parts.append(data.decode(errors="replace"))
                continue
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
            chunks = []
            try:
                while chunk := reader.read(1 << 20):
                    chunks.append(chunk)
            except zstandard.ZstdError:  # the frame being written when we read
                pass
            parts.append(b"".join(chunks).decode(errors="replace"))
        return "".join(parts)

    return read

"""Dataset I/O and atomic output commits.

A stage writes into a staging directory beside its output (same filesystem), guards check the
staged files, and only then is the staging directory committed:

* no previous output: one ``rename``;
* previous output and ``overwrite``: an atomic exchange (Linux ``renameat2(RENAME_EXCHANGE)``), so
  readers see the old output or the new one, never a mix and never nothing; where the exchange is
  not available, two renames (a crash between them leaves no output, never half of one).

A failed run removes its staging directory and leaves the previous output untouched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from privstage.errors import SpecError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "MANIFEST_NAME",
    "STAGING_DIR",
    "commit",
    "discard",
    "is_local",
    "is_uri",
    "local_path",
    "new_staging_path",
    "output_exists",
    "read_dataset",
    "write_json_atomic",
]

STAGING_DIR = ".privstage-staging"
MANIFEST_NAME = "_privstage_manifest.json"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: str) -> bool:
    """True for ``scheme://...`` paths (``file://`` included)."""
    return bool(_URI.match(path))


def is_local(path: str) -> bool:
    """True for paths on the local filesystem: plain paths and ``file://`` URIs."""
    return not is_uri(path) or path.startswith("file://")


def local_path(path: str) -> Path:
    """The local filesystem path of a dataset path.

    Raises:
        SpecError: a URI scheme other than ``file://`` (object stores need a commit protocol that
            this version does not provide).
    """
    if path.startswith("file://"):
        return Path(path[len("file://") :])
    if is_uri(path):
        scheme = path.split("://", 1)[0]
        raise SpecError(f"output '{path}': scheme '{scheme}' is not supported for atomic commits (local paths only)")
    return Path(path)


def output_exists(path: str) -> bool:
    return local_path(path).exists()


def new_staging_path(output: str, run_id: str) -> str:
    """A fresh staging directory beside ``output`` (same filesystem, so commit is a rename)."""
    out = local_path(output)
    staging = out.parent / STAGING_DIR / f"{out.name}.{run_id}.{uuid.uuid4().hex[:8]}"
    staging.parent.mkdir(parents=True, exist_ok=True)
    return str(staging)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False where the kernel or libc cannot."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def commit(staging: str, output: str, *, overwrite: bool, stage: str | None = None) -> None:
    """Move a guarded staging directory into place.

    Raises:
        SpecError: the output exists and ``overwrite`` is false (checked again here, as another run
            may have committed since validation).
    """
    src, dst = local_path(staging), local_path(output)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        os.rename(src, dst)
        _remove_if_empty(src.parent)
        return
    if not overwrite:
        raise SpecError(f"output {output} exists; set output.mode: overwrite or pass --overwrite", stage=stage)
    if _exchange(src, dst):
        shutil.rmtree(src)  # src now holds the previous output
    else:
        old = src.with_name(src.name + ".old")
        os.rename(dst, old)
        os.rename(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    _remove_if_empty(src.parent)


def _remove_if_empty(directory: Path) -> None:
    """Remove the staging folder once no run uses it (another run may, concurrently)."""
    try:
        directory.rmdir()
    except OSError:
        pass


def discard(staging: str | None) -> None:
    """Remove a staging directory (best effort; used on failure)."""
    if staging:
        path = local_path(staging)
        shutil.rmtree(path, ignore_errors=True)
        _remove_if_empty(path.parent)


def read_dataset(spark: SparkSession, path: str, fmt: str, options: dict[str, str] | None = None) -> DataFrame:
    reader = spark.read.format(fmt)
    if options:
        reader = reader.options(**options)
    return reader.load(path)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON through a temporary file and rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, target)

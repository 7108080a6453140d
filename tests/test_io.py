"""Atomic output commits and local paths (no Spark: datasets are plain directories here)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from privstage import io
from privstage.errors import SpecError
from privstage.io import (
    STAGING_DIR,
    commit,
    discard,
    local_path,
    new_staging_path,
    output_exists,
    write_json_atomic,
)


def make_dataset(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (path / name).write_text(content, encoding="utf-8")
    return path


def contents(path: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(path.iterdir())}


@pytest.fixture(params=["exchange", "two-renames"])
def commit_strategy(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run overwrite commits with renameat2(RENAME_EXCHANGE), and as on a kernel without it."""
    if request.param == "two-renames":
        monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    return request.param


# --------------------------------------------------------------------------------------------
# local_path
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("file:///data/out", Path("/data/out")),
        ("/data/out", Path("/data/out")),
        ("relative/out", Path("relative/out")),
        ("C:/not/a/scheme", Path("C:/not/a/scheme")),
    ],
)
def test_local_path_accepts_local_paths(path: str, expected: Path) -> None:
    assert local_path(path) == expected


@pytest.mark.parametrize("scheme", ["s3", "s3a", "gs", "abfss", "hdfs", "http", "sc"])
def test_local_path_rejects_other_schemes(scheme: str) -> None:
    with pytest.raises(SpecError) as info:
        local_path(f"{scheme}://bucket/out")
    assert f"scheme '{scheme}'" in str(info.value)
    assert info.value.retryable is False


def test_output_exists(tmp_path: Path) -> None:
    assert not output_exists(str(tmp_path / "out"))
    (tmp_path / "out").mkdir()
    assert output_exists(str(tmp_path / "out"))
    assert output_exists(f"file://{tmp_path / 'out'}")


# --------------------------------------------------------------------------------------------
# staging paths
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file-uri"])
def test_new_staging_path_is_beside_the_output(tmp_path: Path, as_uri: bool) -> None:
    out = tmp_path / "output" / "visits"
    staging = Path(new_staging_path(f"file://{out}" if as_uri else str(out), "run42"))
    assert staging.parent == tmp_path / "output" / STAGING_DIR
    assert staging.parent.is_dir()
    assert not staging.exists()  # Spark creates it
    assert staging.name.startswith("visits.run42.")
    assert os.stat(staging.parent).st_dev == os.stat(out.parent).st_dev  # same filesystem: commit is a rename


def test_staging_paths_are_fresh_each_time(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    assert len({new_staging_path(out, "same-run") for _ in range(20)}) == 20


def test_staging_dir_is_hidden_from_readers_of_the_parent(tmp_path: Path) -> None:
    # Spark and Hadoop skip names starting with '.' or '_' when listing a dataset directory.
    assert STAGING_DIR.startswith((".", "_"))
    assert io.MANIFEST_NAME.startswith((".", "_"))


# --------------------------------------------------------------------------------------------
# commit
# --------------------------------------------------------------------------------------------
def test_commit_into_a_fresh_path(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "output" / "visits"
    staging = Path(new_staging_path(str(out), "r1"))
    make_dataset(staging, {"part-0.parquet": "new"})

    commit(str(staging), str(out), overwrite=False)

    assert contents(out) == {"part-0.parquet": "new"}
    assert not staging.exists()
    assert not staging.parent.exists()  # the emptied staging folder is removed too


def test_commit_overwrite_swaps_in_the_new_output(tmp_path: Path, commit_strategy: str) -> None:
    out = make_dataset(tmp_path / "visits", {"part-0.parquet": "old", "part-1.parquet": "old"})
    staging = Path(new_staging_path(str(out), "r2"))
    make_dataset(staging, {"part-0.parquet": "new", "_privstage_manifest.json": "{}"})

    commit(str(staging), str(out), overwrite=True)

    assert contents(out) == {"_privstage_manifest.json": "{}", "part-0.parquet": "new"}
    assert not (tmp_path / STAGING_DIR).exists()  # neither the old output nor the staging remain
    assert sorted(p.name for p in tmp_path.iterdir()) == ["visits"]


def test_commit_via_file_uri(tmp_path: Path, commit_strategy: str) -> None:
    out = make_dataset(tmp_path / "visits", {"a": "old"})
    staging = make_dataset(Path(new_staging_path(f"file://{out}", "r3")), {"a": "new"})
    commit(f"file://{staging}", f"file://{out}", overwrite=True)
    assert contents(out) == {"a": "new"}


def test_commit_without_overwrite_refuses_an_existing_output(tmp_path: Path) -> None:
    out = make_dataset(tmp_path / "visits", {"part-0.parquet": "old"})
    staging = make_dataset(Path(new_staging_path(str(out), "r4")), {"part-0.parquet": "new"})

    with pytest.raises(SpecError) as info:
        commit(str(staging), str(out), overwrite=False, stage="pseudo")

    message = str(info.value)
    assert message.startswith("[stage pseudo] ")
    assert str(out) in message
    assert "overwrite" in message
    assert info.value.stage == "pseudo"
    assert contents(out) == {"part-0.parquet": "old"}
    assert contents(staging) == {"part-0.parquet": "new"}  # left for the caller to discard


def test_exchange_swaps_or_leaves_both_untouched(tmp_path: Path) -> None:
    a = make_dataset(tmp_path / "a", {"x": "a"})
    b = make_dataset(tmp_path / "b", {"y": "b"})
    if io._exchange(a, b):
        assert (contents(a), contents(b)) == ({"y": "b"}, {"x": "a"})
    else:
        assert (contents(a), contents(b)) == ({"x": "a"}, {"y": "b"})


def test_exchange_of_a_missing_path_fails_cleanly(tmp_path: Path) -> None:
    b = make_dataset(tmp_path / "b", {"y": "b"})
    assert io._exchange(tmp_path / "missing", b) is False
    assert contents(b) == {"y": "b"}


# --------------------------------------------------------------------------------------------
# discard
# --------------------------------------------------------------------------------------------
def test_discard_removes_staging(tmp_path: Path) -> None:
    out = make_dataset(tmp_path / "visits", {"part-0.parquet": "old"})
    staging = make_dataset(Path(new_staging_path(str(out), "r5")), {"part-0.parquet": "half-written"})
    discard(str(staging))
    assert not staging.exists()
    assert contents(out) == {"part-0.parquet": "old"}


@pytest.mark.parametrize("staging", [None, "", "/nonexistent/privstage-staging-dir"])
def test_discard_is_best_effort(staging: str | None) -> None:
    discard(staging)


# --------------------------------------------------------------------------------------------
# write_json_atomic
# --------------------------------------------------------------------------------------------
def test_write_json_atomic(tmp_path: Path) -> None:
    target = tmp_path / "reports" / "run.json"
    when = datetime(2024, 1, 1, tzinfo=UTC)
    write_json_atomic(target, {"status": "succeeded", "at": when, "path": tmp_path, "n": [1, 2]})
    assert json.loads(target.read_text(encoding="utf-8")) == {
        "status": "succeeded",
        "at": str(when),
        "path": str(tmp_path),
        "n": [1, 2],
    }

    write_json_atomic(str(target), {"status": "failed"})  # replaces, and accepts str paths
    assert json.loads(target.read_text(encoding="utf-8")) == {"status": "failed"}
    assert [p.name for p in target.parent.iterdir()] == ["run.json"]  # no temp files left


@pytest.mark.parametrize(
    ("path", "uri", "local"),
    [
        ("data/visits", False, True),
        ("/abs/visits", False, True),
        ("file:///abs/visits", True, True),
        ("s3a://bucket/visits", True, False),
        ("abfss://c@acct.dfs.core.windows.net/v", True, False),
        ("C:relative", False, True),
    ],
)
def test_uri_and_local_path_classification(path, uri, local):
    from privstage.io import is_local, is_uri

    assert (is_uri(path), is_local(path)) == (uri, local)

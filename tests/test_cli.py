"""The privstage command line, in process (the subprocess runs are in integration_tests/)."""

from __future__ import annotations

import base64
import json
import stat

import pytest

from privstage.cli import main
from privstage.errors import EXIT_CODES
from privstage.keys import LocalKeyring
from testsupport import PSEUDO_STAGE


def test_keys_init_list_rotate(tmp_path, capsys):
    path = tmp_path / "ring.json"
    assert main(["keys", "init", "--path", str(path), "--key", "a-key", "--key", "b-key"]) == 0
    out = capsys.readouterr()
    assert "development" in out.err.lower()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert main(["keys", "init", "--path", str(path)]) == EXIT_CODES["SpecError"]
    assert "never overwritten" in capsys.readouterr().err

    assert main(["keys", "rotate", "a-key", "--path", str(path)]) == 0
    assert main(["keys", "list", "--path", str(path)]) == 0
    listing = capsys.readouterr().out
    assert "a-key\tversions 1, 2" in listing and "b-key\tversions 1" in listing
    ring = LocalKeyring(path)
    for key_id in ("a-key", "b-key"):
        for version in ring.versions(key_id):
            material = ring.get(key_id, version).material()
            assert base64.b64encode(material).decode() not in listing
            assert material.hex() not in listing


def test_validate_plan_run(workspace, capsys):
    spec = workspace.write_spec(PSEUDO_STAGE)
    assert main(["validate", str(spec)]) == 0
    assert "valid (1 stage: pseudo)" in capsys.readouterr().out
    assert not (workspace.root / "out").exists()

    assert main(["plan", str(spec), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["stages"][0]["key_versions"] == {"pseudonym-key": 1}
    assert "name_pseudonym" in plan["stages"][0]["columns_out"]

    report = workspace.root / "r" / "report.json"
    assert main(["run", str(spec), "--report", str(report), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "pseudo: 5 rows in, 5 rows out" in out
    assert f"report: {report}" in out
    assert json.loads(report.read_text())["status"] == "succeeded"
    # a second run without --overwrite is a SpecError (exit 3); with it, it succeeds
    assert main(["run", str(spec), "--no-progress"]) == EXIT_CODES["SpecError"]
    assert main(["run", str(spec), "--no-progress", "--overwrite"]) == 0


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda s: s.replace("kind: pseudonymize", "kind: nope"), "SpecError"),
        (lambda s: s.replace("key_id: pseudonym-key}", "key_id: missing}", 1), "KeyUnavailable"),
    ],
)
def test_errors_map_to_distinct_exit_codes(workspace, capsys, mutate, code):
    spec = workspace.write_spec(mutate(PSEUDO_STAGE))
    assert main(["run", str(spec), "--no-progress"]) == EXIT_CODES[code]
    err = capsys.readouterr().err
    assert code in err


def test_guard_failure_exit_code(workspace, spark, capsys):
    spark.createDataFrame([], workspace.read("data/visits").schema).write.parquet(str(workspace.root / "data/empty"))
    spec = workspace.write_spec(PSEUDO_STAGE.replace("data/visits", "data/empty"))
    assert main(["run", str(spec), "--no-progress"]) == EXIT_CODES["GuardFailed"]
    assert "not_empty" in capsys.readouterr().err


def test_exit_codes_are_distinct():
    codes = {name: code for name, code in EXIT_CODES.items() if name not in ("OverflowRisk", "PrivstageError")}
    assert len(set(codes.values())) == len(codes)
    assert 0 not in EXIT_CODES.values() and 2 not in EXIT_CODES.values()  # 2 is argparse's usage error

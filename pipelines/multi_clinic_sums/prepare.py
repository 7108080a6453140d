"""Prepare a working folder for the multi-clinic sums example: each clinic's sample visits and dev keys.

``python pipelines/multi_clinic_sums/prepare.py WORKDIR`` writes

* ``data/C01/visits``, ``data/C02/visits``, ``data/C03/visits``: each clinic's own rows of one
  deterministic generated table (:func:`privstage.sample_data.write_multi_clinic_visits`);
* ``keys/<role>/<key id>``: random 256-bit development keys (base64, mode 0600) for the ``files`` key
  provider, one folder per role holding only what that role may hold: each clinic its manifest key, the
  aggregator its own, the key holder the sealing key, the aggregator's key and the clinics' keys (it
  verifies their manifests). Production mounts the same layout from Kubernetes Secrets.

Then run, with ``--base-dir WORKDIR``: ``key_holder.yaml --stage round_keys``, each ``clinic_c0N.yaml``,
``aggregator.yaml``, ``key_holder.yaml --stage release`` (``run_all`` does exactly that in process).
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLINICS = ("C01", "C02", "C03")
PARTIES = {clinic: f"clinic-{clinic.lower()}" for clinic in CLINICS}
#: The CLI invocations of one round, in order (spec file, selected stage or None).
STEPS: tuple[tuple[str, str | None], ...] = (
    ("key_holder.yaml", "round_keys"),
    *((f"clinic_{c.lower()}.yaml", None) for c in CLINICS),
    ("aggregator.yaml", None),
    ("key_holder.yaml", "release"),
)


def _write_key(folder: Path, key_id: str, material: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / key_id
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(base64.b64encode(material).decode("ascii") + "\n")


def prepare(workdir: str | os.PathLike[str], *, rows: int = 600) -> Path:
    """Write the clinics' sample data and per-role development keys under ``workdir``; returns it."""
    from privstage.sample_data import write_multi_clinic_visits

    root = Path(workdir).resolve()
    write_multi_clinic_visits(root / "data", clinics=CLINICS, n_rows=rows)
    keys = root / "keys"
    aggregator = os.urandom(32)
    _write_key(keys / "key_holder", "he-kek", os.urandom(32))
    _write_key(keys / "key_holder", "he-aggregator-hub", aggregator)
    _write_key(keys / "aggregator", "he-aggregator-hub", aggregator)
    for party in PARTIES.values():
        material = os.urandom(32)
        _write_key(keys / f"clinic_{party.split('-')[1]}", f"he-party-{party}", material)
        _write_key(keys / "key_holder", f"he-party-{party}", material)
    return root


def commands(workdir: str | os.PathLike[str], *extra: str) -> list[list[str]]:
    """The ``privstage`` argument lists of one round, in order."""
    out = []
    for spec, stage in STEPS:
        args = ["run", str(HERE / spec), "--base-dir", str(workdir), *extra]
        if stage is not None:
            args += ["--stage", stage]
        out.append(args)
    return out


def run_all(workdir: str | os.PathLike[str], cli: Callable[[Sequence[str]], int], *extra: str) -> list[int]:
    """Run the round's steps through ``cli`` (``privstage.cli.main`` or a subprocess); stops at a failure."""
    codes = []
    for args in commands(workdir, *extra):
        codes.append(cli(args))
        if codes[-1] != 0:
            break
    return codes


if __name__ == "__main__":
    target = prepare(sys.argv[1] if len(sys.argv) > 1 else "multi-clinic-output")
    print(f"prepared {target}")
    for args in commands(target):
        print("privstage " + " ".join(args))

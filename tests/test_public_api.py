"""The curated public API and the import boundaries (engine without orchestrators)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import privstage

EXPECTED = {
    "BudgetExceeded",
    "EnvKeyProvider",
    "FileKeyProvider",
    "GuardFailed",
    "HEParameterError",
    "IntegrityError",
    "KeyProvider",
    "KeyUnavailable",
    "LocalKeyring",
    "OverflowRisk",
    "PipelineManifest",
    "PipelineSpec",
    "PrivstageError",
    "RunContext",
    "SpecError",
    "StageExecutionError",
    "StageManifest",
    "__version__",
    "get_session",
    "load_spec",
    "parse_spec",
    "provider_from_spec",
    "run_pipeline",
    "validate_pipeline",
}


def test_exported_names_are_the_intended_ones():
    assert set(privstage.__all__) == EXPECTED
    for name in privstage.__all__:
        assert getattr(privstage, name) is not None, name


def test_unknown_attribute_raises():
    with pytest.raises(AttributeError):
        privstage.no_such_thing  # noqa: B018


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    import json

    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _loaded(modules: set[str], top: str) -> bool:
    return any(m == top or m.startswith(top + ".") for m in modules)


def test_import_privstage_loads_no_orchestrator_nor_gx_nor_spark():
    modules = _modules_after("import privstage; privstage.PipelineSpec; privstage.LocalKeyring")
    for top in ("airflow", "dagster", "great_expectations", "pyspark", "tenseal", "diffprivlib"):
        assert not _loaded(modules, top), top


def test_engine_loads_no_orchestrator_nor_gx():
    modules = _modules_after("import privstage.engine, privstage.cli, privstage.stages.pseudonymize")
    for top in ("airflow", "dagster", "great_expectations", "tenseal", "diffprivlib"):
        assert not _loaded(modules, top), top


def test_only_guards_gx_imports_great_expectations():
    from pathlib import Path

    root = Path(privstage.__file__).parent
    importers = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if "import great_expectations" in p.read_text() or "from great_expectations" in p.read_text()
    )
    assert importers == ["guards/gx.py"]


def test_adapters_hold_no_privacy_logic():
    """The orchestrator packages never import the HMAC / crypto internals directly."""
    from pathlib import Path

    import privstage_airflow
    import privstage_dagster

    for package in (privstage_airflow, privstage_dagster):
        for path in Path(package.__file__).parent.rglob("*.py"):
            text = path.read_text()
            for forbidden in ("hashlib", "hmac", "privstage.stages", "cryptography"):
                assert forbidden not in text, f"{path} uses {forbidden}"

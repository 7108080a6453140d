"""The Airflow provider package: provider metadata, public API, operator shape, error translation.

Fast: no DAG runs (integration_tests/test_airflow.py runs them). The root conftest points
AIRFLOW_HOME at a temporary folder before Airflow is imported.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import jsonschema
import privstage_airflow
import pytest
from privstage_airflow import PrivacyPipelineOperator, PrivstageHook, PseudonymizeOperator
from privstage_airflow._compat import AirflowFailException
from privstage_airflow._errors import translate_errors
from privstage_airflow.get_provider_info import get_provider_info
from privstage_airflow.hooks.privstage import ConnectionSettings

import privstage.errors as errors
from privstage.__about__ import __version__
from privstage.errors import (
    BudgetExceeded,
    GuardFailed,
    HEParameterError,
    IntegrityError,
    KeyUnavailable,
    OverflowRisk,
    PrivstageError,
    SpecError,
    StageExecutionError,
)

ENTRY_POINT = "privstage_airflow.get_provider_info:get_provider_info"


def airflow_schema(name: str) -> dict[str, Any]:
    return json.loads(resources.files("airflow").joinpath(name).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# Provider metadata
# ---------------------------------------------------------------------------------------------
def test_provider_info_satisfies_airflows_runtime_and_authoring_schemas() -> None:
    info = get_provider_info()
    jsonschema.validate(info, airflow_schema("provider_info.schema.json"))
    # The runtime schema does not look inside conn-fields; the provider.yaml schema does.
    authoring = airflow_schema("provider.yaml.schema.json")["properties"]["connection-types"]
    jsonschema.validate(info["connection-types"], authoring)
    assert info["versions"] == [__version__]


def test_provider_package_name_is_the_distribution_that_declares_the_entry_point() -> None:
    # ProvidersManager raises (and breaks every Airflow command) when the two differ.
    (entry_point,) = [ep for ep in metadata.entry_points(group="apache_airflow_provider") if ep.value == ENTRY_POINT]
    assert entry_point.dist is not None
    assert entry_point.dist.name == get_provider_info()["package-name"] == "privstage"


def test_every_module_and_hook_class_listed_in_provider_info_imports() -> None:
    info = get_provider_info()
    for section in ("operators", "hooks"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    (conn,) = info["connection-types"]
    module_name, _, class_name = conn["hook-class-name"].rpartition(".")
    hook_class = getattr(importlib.import_module(module_name), class_name)
    assert hook_class is PrivstageHook
    assert hook_class.conn_type == conn["connection-type"]
    assert set(conn["conn-fields"]) == {f.name for f in ConnectionSettings.__dataclass_fields__.values()}


def test_providers_manager_registers_the_provider_its_hook_and_connection_form() -> None:
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    manager = ProvidersManager()
    assert manager.providers["privstage"].version == __version__
    hook = ProvidersManagerTaskRuntime().hooks["privstage"]
    assert hook is not None
    assert hook.hook_class_name == "privstage_airflow.hooks.privstage.PrivstageHook"
    assert hook.connection_id_attribute_name == "privstage_conn_id"
    assert {"extra__privstage__spark_remote", "extra__privstage__keys_directory"} <= set(
        manager.connection_form_widgets
    )
    assert "password" in manager.field_behaviours["privstage"]["hidden_fields"]


def test_provider_info_and_package_import_without_spark_or_great_expectations() -> None:
    # DAG files import the package at parse time; the engine's heavy imports wait for execute().
    code = (
        "import sys\n"
        "from privstage_airflow.get_provider_info import get_provider_info\n"
        "get_provider_info()\n"
        "assert 'airflow' not in sys.modules, 'listing providers must not import the operators'\n"
        "from privstage_airflow import PrivacyPipelineOperator, PseudonymizeOperator\n"
        "heavy = sorted(m for m in ('pyspark', 'great_expectations', 'pandas') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------------------------------------
# Public API and operator shape
# ---------------------------------------------------------------------------------------------
def test_public_api_is_exactly_the_intended_names() -> None:
    assert sorted(privstage_airflow.__all__) == [
        "PrivacyPipelineOperator",
        "PrivstageHook",
        "PrivstageOperatorBase",
        "PseudonymizeOperator",
        "__version__",
    ]
    for name in privstage_airflow.__all__:
        assert getattr(privstage_airflow, name) is not None
    for package in ("privstage_airflow.operators", "privstage_airflow.hooks"):
        module = importlib.import_module(package)
        assert all(hasattr(module, name) for name in module.__all__)


@pytest.mark.parametrize(
    ("operator", "fields"),
    [
        (PrivacyPipelineOperator, ("spec_path", "stages", "base_dir", "report_path")),
        (PseudonymizeOperator, ("input_path", "output_path", "key_id", "base_dir", "report_path")),
    ],
)
def test_template_fields(operator: type, fields: tuple[str, ...]) -> None:
    assert tuple(operator.template_fields) == fields
    # A ".yaml" template_ext would make Jinja render the spec file and pass its text as the path.
    assert not any(ext in (".yaml", ".yml") for ext in operator.template_ext)


def test_constructors_store_keyword_arguments_and_touch_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    op = PrivacyPipelineOperator(
        task_id="run",
        spec_path=str(missing),
        stages=["a"],
        base_dir="{{ params.base_dir }}",
        report_path="r.json",
        overwrite=True,
        privstage_conn_id="not_defined_anywhere",
    )
    assert (op.spec_path, op.stages, op.base_dir, op.report_path, op.overwrite) == (
        str(missing),
        ["a"],
        "{{ params.base_dir }}",
        "r.json",
        True,
    )
    assert "hook" not in vars(op), "the hook is built on first use, not at parse time"
    with pytest.raises(TypeError):
        PrivacyPipelineOperator("run", str(missing))  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Error translation: the retry decision at the boundary
# ---------------------------------------------------------------------------------------------
FAILS_WITHOUT_RETRY = (SpecError, GuardFailed, BudgetExceeded, IntegrityError, HEParameterError, OverflowRisk)
MAY_RETRY = (KeyUnavailable, StageExecutionError, PrivstageError)


def test_the_tables_cover_every_privstage_error() -> None:
    exported = {getattr(errors, n) for n in errors.__all__ if isinstance(getattr(errors, n), type)}
    assert exported == set(FAILS_WITHOUT_RETRY) | set(MAY_RETRY)


@pytest.mark.parametrize("error_class", FAILS_WITHOUT_RETRY, ids=lambda c: c.__name__)
def test_non_retryable_errors_become_airflow_fail_exception_from_the_original(error_class: type) -> None:
    original = error_class("stage 'x' failed: column ssn", stage="x")
    with pytest.raises(AirflowFailException) as caught, translate_errors():
        raise original
    assert type(caught.value) is AirflowFailException
    assert str(caught.value) == str(original)
    assert caught.value.__cause__ is original


@pytest.mark.parametrize("error_class", MAY_RETRY, ids=lambda c: c.__name__)
def test_retryable_errors_propagate_unchanged(error_class: type) -> None:
    original = error_class("key 'k' is unavailable")
    with pytest.raises(error_class) as caught, translate_errors():
        raise original
    assert caught.value is original


def test_foreign_errors_propagate_unchanged() -> None:
    original = ValueError("not ours")
    with pytest.raises(ValueError) as caught, translate_errors():
        raise original
    assert caught.value is original


# ---------------------------------------------------------------------------------------------
# PseudonymizeOperator builds a one-stage spec
# ---------------------------------------------------------------------------------------------
def test_pseudonymize_operator_builds_a_one_stage_spec(tmp_path: Path) -> None:
    op = PseudonymizeOperator(
        task_id="clinic.pseudonymize-visits",
        input_path="data/visits",
        output_path="out/visits",
        columns=["ssn", {"column": "email", "case_fold": True}, {"column": "name", "key_id": "name-key"}],
        key_id="pseudonym-key",
        keys={"provider": "files", "directory": "/run/secrets/privstage"},
        base_dir=str(tmp_path),
        sensitive_columns=["date_of_birth"],
        expect_after=[{"type": "expect_column_values_to_be_unique", "kwargs": {"column": "visit_id"}}],
    )
    spec = op.build_spec()
    (stage,) = spec.stages
    assert spec.name == stage.name == "clinic_pseudonymize_visits"
    assert stage.kind == "pseudonymize"
    assert [(c.column, c.key_id, c.case_fold) for c in stage.columns] == [
        ("ssn", "pseudonym-key", False),
        ("email", "pseudonym-key", True),
        ("name", "name-key", False),
    ]
    assert spec.keys.provider == "files"
    assert spec.input_path(stage) == str(tmp_path / "data/visits")
    assert [e.type for e in stage.expect_after] == ["expect_column_values_to_be_unique"]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"columns": []}, "stages.0.columns"),
        ({"key_id": "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZg"}, "stages.0.columns.0.key_id"),
        ({"columns": [{"column": "ssn", "encoding": "base32"}]}, "stages.0.columns.0.encoding"),
        ({"keys": {"provider": "vault"}}, "keys"),
    ],
)
def test_invalid_pseudonymize_arguments_are_a_spec_error_naming_the_field(
    arguments: dict[str, Any], field: str, tmp_path: Path
) -> None:
    base = {"input_path": "in", "output_path": "out", "columns": ["ssn"], "key_id": "pseudonym-key"}
    op = PseudonymizeOperator(task_id="p", base_dir=str(tmp_path), **{**base, **arguments})
    with pytest.raises(SpecError) as caught:
        op.build_spec()
    message = str(caught.value)
    assert f"{field}:" in message
    assert "Zm9vYmFy" not in message, "the message never echoes argument values"


# ---------------------------------------------------------------------------------------------
# Hook: optional connection, overrides by location only
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra",
    [
        {"spark_remote": "sc://spark:15002", "keys_directory": "/keys"},
        {"extra__privstage__spark_remote": "sc://spark:15002", "extra__privstage__keys_directory": "/keys"},
    ],
)
def test_connection_settings_read_plain_and_ui_prefixed_extras(extra: dict[str, str]) -> None:
    assert ConnectionSettings.from_extra(extra, "privstage") == ConnectionSettings("sc://spark:15002", "/keys")


def test_hook_without_default_connection_uses_the_spec(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, spark: Any
) -> None:
    from privstage.keys import LocalKeyring
    from privstage.spec import parse_spec

    monkeypatch.delenv("AIRFLOW_CONN_PRIVSTAGE_DEFAULT", raising=False)
    monkeypatch.delenv("PRIVSTAGE_KEYRING", raising=False)
    spec = parse_spec(
        "name: p\nstages:\n  - {name: s, kind: pseudonymize, input: {path: in}, output: {path: out},\n"
        "     columns: [{column: ssn, key_id: k}]}\n",
        base_dir=tmp_path,
    )
    hook = PrivstageHook()
    assert hook.settings == ConnectionSettings()
    provider = hook.get_key_provider(spec)
    assert isinstance(provider, LocalKeyring)
    assert provider.path == tmp_path / ".privstage" / "dev-keyring.json"
    assert hook.get_spark(spec) is spark


def test_hook_connection_key_directory_replaces_the_spec_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from privstage.keys import FileKeyProvider
    from privstage.spec import parse_spec

    conn = {"conn_type": "privstage", "extra": {"keys_directory": str(tmp_path / "keys")}}
    monkeypatch.setenv("AIRFLOW_CONN_PRIVSTAGE_DEFAULT", json.dumps(conn))
    spec = parse_spec(
        "name: p\nstages:\n  - {name: s, kind: pseudonymize, input: {path: in}, output: {path: out},\n"
        "     columns: [{column: ssn, key_id: k}]}\n",
        base_dir=tmp_path,
    )
    provider = PrivstageHook().get_key_provider(spec)
    assert isinstance(provider, FileKeyProvider)
    assert "keys" in provider.describe()


def test_a_named_connection_that_does_not_exist_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import AirflowNotFoundException

    monkeypatch.delenv("AIRFLOW_CONN_PRIVSTAGE_PROD", raising=False)
    with pytest.raises(AirflowNotFoundException):
        _ = PrivstageHook("privstage_prod").settings

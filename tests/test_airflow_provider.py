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
from privstage_airflow import (
    AnonymizeOperator,
    DecryptOperator,
    DPAggregateOperator,
    EncryptOperator,
    HEAggregateOperator,
    HEDecryptOperator,
    HEEncryptOperator,
    HEKeygenOperator,
    PrivacyPipelineOperator,
    PrivstageHook,
    PseudonymizeOperator,
)
from privstage_airflow._compat import AirflowFailException
from privstage_airflow._errors import translate_errors
from privstage_airflow.get_provider_info import get_provider_info
from privstage_airflow.hooks.privstage import ConnectionSettings, ledger_url_from_connection
from privstage_airflow.operators.pipeline import dp_release_summary, run_context_from

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
        "from privstage_airflow import DPAggregateOperator, PrivacyPipelineOperator, PseudonymizeOperator\n"
        "heavy = sorted(m for m in ('pyspark', 'great_expectations', 'pandas') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------------------------------------
# Public API and operator shape
# ---------------------------------------------------------------------------------------------
def test_public_api_is_exactly_the_intended_names() -> None:
    assert sorted(privstage_airflow.__all__) == [
        "AnonymizeOperator",
        "DPAggregateOperator",
        "DecryptOperator",
        "EncryptOperator",
        "HEAggregateOperator",
        "HEDecryptOperator",
        "HEEncryptOperator",
        "HEKeygenOperator",
        "HEStageOperator",
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
        (PrivacyPipelineOperator, ("spec_path", "stages", "base_dir", "report_path", "partition")),
        (PseudonymizeOperator, ("input_path", "output_path", "key_id", "base_dir", "report_path", "partition")),
        (DPAggregateOperator, ("spec_path", "stage", "partition", "base_dir", "report_path")),
        (HEKeygenOperator, ("spec_path", "stage", "base_dir", "report_path")),
        (HEEncryptOperator, ("spec_path", "stage", "base_dir", "report_path")),
        (HEAggregateOperator, ("spec_path", "stage", "base_dir", "report_path")),
        (HEDecryptOperator, ("spec_path", "stage", "base_dir", "report_path")),
        (EncryptOperator, ("spec_path", "stage", "base_dir", "report_path", "partition")),
        (DecryptOperator, ("spec_path", "stage", "base_dir", "report_path", "partition")),
        (AnonymizeOperator, ("spec_path", "stage", "base_dir", "report_path", "partition")),
    ],
)
def test_template_fields(operator: type, fields: tuple[str, ...]) -> None:
    assert tuple(operator.template_fields) == fields
    # A ".yaml" template_ext would make Jinja render the spec file and pass its text as the path.
    assert not any(ext in (".yaml", ".yml") for ext in operator.template_ext)
    # A rendered ledger URL would be stored in the metadata DB (rendered fields), password and all.
    assert "ledger_url" not in operator.template_fields


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
    dp = DPAggregateOperator(
        task_id="release",
        spec_path=str(missing),
        stage="dp",
        partition="{{ params.month }}",
        ledger_conn_id="not_defined_anywhere",
    )
    assert (dp.spec_path, dp.stage, dp.partition, dp.ledger_conn_id, dp.ledger_url) == (
        str(missing),
        "dp",
        "{{ params.month }}",
        "not_defined_anywhere",
        None,
    )
    assert "hook" not in vars(dp)
    with pytest.raises(TypeError):
        DPAggregateOperator("release", str(missing), "dp")  # type: ignore[misc]


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


# ---------------------------------------------------------------------------------------------
# DP: the operator's stage, the partition, the ledger connection, the XCom summary
# ---------------------------------------------------------------------------------------------
CLINIC_SPEC = Path(__file__).resolve().parents[1] / "pipelines" / "clinic_visits" / "pipeline.yaml"


def test_dp_operator_runs_only_a_dp_aggregate_stage_of_the_spec(tmp_path: Path) -> None:
    op = DPAggregateOperator(task_id="release", spec_path=str(CLINIC_SPEC), stage="dp_visits_monthly")
    spec = op.build_spec()
    assert op.selected_stages() == ["dp_visits_monthly"]
    assert spec.stage("dp_visits_monthly").kind == "dp_aggregate"

    wrong_kind = DPAggregateOperator(task_id="release", spec_path=str(CLINIC_SPEC), stage="pseudonymize_visits")
    with pytest.raises(SpecError, match="'pseudonymize_visits' is a pseudonymize stage"):
        wrong_kind.build_spec()
    unknown = DPAggregateOperator(task_id="release", spec_path=str(CLINIC_SPEC), stage="dp_visits_weekly")
    with pytest.raises(SpecError, match="dp_visits_weekly"):
        unknown.build_spec()


def test_encryption_operators_run_only_their_kind_of_stage() -> None:
    op = EncryptOperator(task_id="encrypt", spec_path=str(CLINIC_SPEC), stage="encrypt_visits")
    assert op.build_spec().stage("encrypt_visits").kind == "encrypt" and op.selected_stages() == ["encrypt_visits"]
    with pytest.raises(SpecError, match="'dp_visits_monthly' is a dp_aggregate stage"):
        EncryptOperator(task_id="encrypt", spec_path=str(CLINIC_SPEC), stage="dp_visits_monthly").build_spec()
    with pytest.raises(SpecError, match="DecryptOperator 'decrypt' runs decrypt stages"):
        DecryptOperator(task_id="decrypt", spec_path=str(CLINIC_SPEC), stage="encrypt_visits").build_spec()
    with pytest.raises(TypeError):
        EncryptOperator("encrypt", str(CLINIC_SPEC), "encrypt_visits")  # type: ignore[misc]


class _TI:
    """The task-instance fields run_context_from reads (a plain record, as the Task SDK hands it over)."""

    dag_id, run_id, task_id, map_index, try_number = "d", "scheduled__2026-01-01", "release", -1, 2


@pytest.mark.parametrize(
    ("argument", "context", "partition"),
    [
        (None, {"logical_date": "2025-12-01T00:00:00+00:00"}, "2025-12-01T00:00:00+00:00"),
        ("", {"logical_date": "2025-12-01T00:00:00+00:00"}, "2025-12-01T00:00:00+00:00"),  # an empty template
        (None, {"partition_key": "2025-11", "logical_date": "2025-12-01T00:00:00+00:00"}, "2025-11"),
        ("2025-10", {"partition_key": "2025-11", "logical_date": "2025-12-01T00:00:00+00:00"}, "2025-10"),
        (None, {"logical_date": None}, None),
    ],
    ids=["logical-date", "empty-argument", "run-partition-key", "argument-wins", "none"],
)
def test_the_partition_is_the_argument_else_the_runs_partition_key_else_the_logical_date(
    argument: str | None, context: dict[str, Any], partition: str | None
) -> None:
    from datetime import datetime

    given = dict(context, ti=_TI())
    if given.get("logical_date"):
        given["logical_date"] = datetime.fromisoformat(given["logical_date"])
    run = run_context_from(given, argument)  # type: ignore[arg-type]
    assert run.partition == partition
    assert (run.run_key, run.orchestrator, run.attempt) == ("airflow/d/scheduled__2026-01-01/release", "airflow", 2)


TEST_PASSWORD = "p@ss/w:rd"  # noqa: S105 - a test value with characters that need URL quoting


class _Conn:
    """An Airflow connection's fields (what BaseHook.get_connection returns)."""

    def __init__(self, conn_type: str, **fields: Any) -> None:
        self.conn_id, self.conn_type = "privacy_ledger", conn_type
        self.host, self.port, self.login, self.schema = (fields.get(k) for k in ("host", "port", "login", "schema"))
        self.password = fields.get("password")
        self.extra_dejson = fields.get("extra", {})


@pytest.mark.parametrize(
    ("conn", "url"),
    [
        (
            _Conn("postgres", host="db", port=5432, login="ledger", password=TEST_PASSWORD, schema="privacy",
                  extra={"options": "-csearch_path=dp", "sslmode": "require", "cursor": "dictcursor"}),
            "postgresql+psycopg://ledger:p%40ss%2Fw%3Ard@db:5432/privacy?options=-csearch_path%3Ddp&sslmode=require",
        ),
        (_Conn("postgresql", host="db"), "postgresql+psycopg://db"),
        (_Conn("sqlite", host="/var/lib/privstage/ledger.db"), "sqlite:////var/lib/privstage/ledger.db"),
    ],
    ids=["postgres", "postgresql-minimal", "sqlite"],
)  # fmt: skip
def test_a_ledger_connection_becomes_a_sqlalchemy_url(conn: _Conn, url: str) -> None:
    from sqlalchemy.engine import make_url

    built = ledger_url_from_connection(conn)
    assert built == url
    assert make_url(built).password == conn.password  # the password survives URL quoting exactly


@pytest.mark.parametrize(
    ("conn", "message"),
    [
        (_Conn("mysql", host="db", password=TEST_PASSWORD), "has type 'mysql'"),
        (_Conn("postgres", password=TEST_PASSWORD), "has no host"),
        (_Conn("sqlite"), "names no database file"),
    ],
)
def test_an_unusable_ledger_connection_is_a_spec_error_without_its_password(conn: _Conn, message: str) -> None:
    with pytest.raises(SpecError, match=message) as caught:
        ledger_url_from_connection(conn)
    assert "privacy_ledger" in str(caught.value) and TEST_PASSWORD not in str(caught.value)


def test_ledger_url_precedence_argument_then_connection_then_engine_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_PRIVSTAGE_LEDGER_DEFAULT", raising=False)
    assert PrivstageHook().get_ledger_url() is None, "no connection: the engine's default decides"
    conn = {"conn_type": "sqlite", "host": str(tmp_path / "conn.db")}
    monkeypatch.setenv("AIRFLOW_CONN_PRIVSTAGE_LEDGER_DEFAULT", json.dumps(conn))
    assert PrivstageHook().get_ledger_url() == f"sqlite:///{tmp_path / 'conn.db'}"
    explicit = f"sqlite:///{tmp_path / 'arg.db'}"
    assert PrivstageHook(ledger_url=explicit).get_ledger_url() == explicit
    assert PrivstageHook(ledger_conn_id=None).get_ledger_url() is None


def test_a_named_ledger_connection_that_does_not_exist_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import AirflowNotFoundException

    monkeypatch.delenv("AIRFLOW_CONN_PRIVACY_LEDGER", raising=False)
    with pytest.raises(AirflowNotFoundException):
        PrivstageHook(ledger_conn_id="privacy_ledger").get_ledger_url()


def test_the_ledger_url_and_its_password_are_registered_with_the_secrets_masker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    password = "canary-pw-4d1f9e"  # noqa: S105 - a test value
    conn = {"conn_type": "postgres", "host": "db", "login": "ledger", "password": password, "schema": "privacy"}
    monkeypatch.setenv("AIRFLOW_CONN_PRIVSTAGE_LEDGER_DEFAULT", json.dumps(conn))
    url = PrivstageHook().get_ledger_url()
    assert url is not None and password in url
    assert password not in str(redact(f"connecting to {url}"))
    assert password not in str(redact(f"password is {password}"))


MANIFEST_STAGE = {
    "name": "dp",
    "kind": "dp_aggregate",
    "status": "succeeded",
    "output": "/out/dp/2025-12",
    "details": {
        "dp": {
            "ledger_key": "p/dp/visits/2025/2025-12",
            "dataset": "visits",
            "period": "2025",
            "partition": "2025-12",
            "budget": {"epsilon": "0.5", "delta": "0"},
            "release_sha256": "ab" * 32,
            "reused_release": False,
        }
    },
}


@pytest.mark.parametrize(
    ("change", "spent", "reused"),
    [
        ({}, ("0.5", "0"), False),
        ({"details": {"dp": {**MANIFEST_STAGE["details"]["dp"], "reused_release": True}}}, ("0", "0"), True),
        ({"status": "reused"}, ("0", "0"), True),  # reconnected to the committed output: nothing spent
    ],
    ids=["fresh-release", "release-from-the-ledger", "output-reused"],
)
def test_the_dp_summary_says_what_this_run_spent(change: dict[str, Any], spent: tuple[str, str], reused: bool) -> None:
    summary = dp_release_summary({**MANIFEST_STAGE, **change})
    assert summary is not None
    assert (summary["epsilon_spent"], summary["delta_spent"], summary["reused"]) == (*spent, reused)
    assert summary["ledger_key"] == "p/dp/visits/2025/2025-12"
    assert summary["release_sha256"] == "ab" * 32
    assert dp_release_summary({**MANIFEST_STAGE, "kind": "pseudonymize"}) is None
    assert dp_release_summary({**MANIFEST_STAGE, "status": "failed"}) is None


# ---------------------------------------------------------------------------------------------
# HE: one operator per role, each runs only its role's stage kind
# ---------------------------------------------------------------------------------------------
HE_EXAMPLE = Path(__file__).resolve().parents[1] / "pipelines" / "multi_clinic_sums"


@pytest.mark.parametrize(
    ("operator", "spec_name", "stage", "wrong"),
    [
        (HEKeygenOperator, "key_holder.yaml", "round_keys", "release"),
        (HEDecryptOperator, "key_holder.yaml", "release", "round_keys"),
        (HEEncryptOperator, "clinic_c01.yaml", "encrypt_sums", None),
        (HEAggregateOperator, "aggregator.yaml", "add_contributions", None),
    ],
)
def test_he_operators_run_only_their_roles_stage(operator, spec_name, stage, wrong) -> None:
    op = operator(task_id="t", spec_path=str(HE_EXAMPLE / spec_name), stage=stage)
    assert op.build_spec().stage(stage).kind == operator.stage_kind
    assert op.selected_stages() == [stage]
    if wrong is not None:
        with pytest.raises(SpecError, match=f"runs {operator.stage_kind} stages"):
            operator(task_id="t", spec_path=str(HE_EXAMPLE / spec_name), stage=wrong).build_spec()
    other = HEAggregateOperator if operator is not HEAggregateOperator else HEEncryptOperator
    with pytest.raises(SpecError, match="stage"):
        other(task_id="t", spec_path=str(HE_EXAMPLE / spec_name), stage=stage).build_spec()

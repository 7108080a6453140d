"""Fast tests of the Dagster adapter: asset shapes, resources, check results, error translation.

No Spark job runs here; the end-to-end runs are in integration_tests/test_dagster.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import privstage_dagster
import pytest
from privstage_dagster import BudgetLedgerResource, KeyProviderResource, SparkResource, build_privstage_assets
from privstage_dagster._errors import failure_from
from privstage_dagster.checks import check_results_from_guards
from privstage_dagster.factories import dp_release_metadata
from pydantic import ValidationError

from privstage.budget import PrivacyBudget
from privstage.errors import BudgetExceeded, GuardFailed, SpecError
from privstage.guards.base import GuardOutcome, GuardReport
from privstage.keys import EnvKeyProvider, FileKeyProvider, LocalKeyring
from privstage.report import PipelineManifest, StageManifest
from privstage.spec import FileKeysSpec, PipelineSpec, SparkSpec, parse_spec

TWO_STAGES = """
name: two_stages
keys: {provider: local, path: keyring.json}
stages:
  - name: first
    kind: pseudonymize
    input: {path: data/in}
    output: {path: out/first}
    columns: [{column: ssn, key_id: pseudonym-key}]
    expect_before:
      - {type: expect_column_values_to_not_be_null, kwargs: {column: ssn}}
  - name: second
    kind: pseudonymize
    description: Second pass over the first stage's output.
    input: {stage: first}
    output: {path: out/second}
    columns: [{column: email, key_id: pseudonym-key}]
    expect_after:
      - {type: expect_column_values_to_be_unique, kwargs: {column: visit_id}}
"""


@pytest.fixture()
def two_stages(tmp_path: Path) -> PipelineSpec:
    return parse_spec(TWO_STAGES, base_dir=tmp_path)


def _resources(**spark_conf: str) -> dict[str, Any]:
    return {"spark": SparkResource(conf=spark_conf), "privstage_keys": KeyProviderResource()}


# ------------------------------------------------------------------------------------------ public API
def test_exported_names_are_the_intended_ones() -> None:
    assert sorted(privstage_dagster.__all__) == [
        "BudgetLedgerResource",
        "EncryptedParquetIOManager",
        "KeyProviderResource",
        "SparkResource",
        "build_privstage_assets",
        "he_aggregate_asset",
        "he_decrypt_asset",
        "he_encrypt_asset",
        "he_keygen_asset",
    ]
    for name in privstage_dagster.__all__:
        assert getattr(privstage_dagster, name).__module__.startswith("privstage_dagster.")


def test_loading_definitions_starts_neither_spark_nor_great_expectations() -> None:
    # A Dagster code server imports the definitions often; that must not need a JVM or GX.
    defs_file = Path(__file__).resolve().parents[1] / "pipelines" / "clinic_visits" / "dagster_defs.py"
    code = (
        "import runpy, sys\n"
        f"defs = runpy.run_path({str(defs_file)!r})['defs']\n"
        "keys = sorted(k.to_user_string() for k in defs.resolve_all_asset_keys())\n"
        "assert keys == ['anonymize_research', 'dp_visits_monthly', 'encrypt_visits', 'pseudonymize_visits'], keys\n"
        "print(sorted(m for m in ('pyspark', 'great_expectations', 'py4j') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------ assets
@pytest.mark.parametrize(
    ("key_prefix", "expected_prefix"),
    [(None, []), ("clinic", ["clinic"]), (["org", "clinic"], ["org", "clinic"])],
)
def test_one_asset_per_stage_with_deps_following_stage_inputs(
    two_stages: PipelineSpec, key_prefix: str | list[str] | None, expected_prefix: list[str]
) -> None:
    assets = build_privstage_assets(two_stages, key_prefix=key_prefix)
    first, second = (dg.AssetKey([*expected_prefix, name]) for name in ("first", "second"))

    graph = dg.Definitions(assets=assets, resources=_resources()).resolve_asset_graph()
    assert set(graph.get_all_asset_keys()) == {first, second}
    assert graph.get(first).parent_keys == set()
    assert graph.get(second).parent_keys == {first}
    assert {graph.get(k).group_name for k in (first, second)} == {"two_stages"}
    assert graph.get(second).description == "Second pass over the first stage's output."


def test_each_stage_declares_blocking_checks_for_its_guards(two_stages: PipelineSpec) -> None:
    first, second = build_privstage_assets(two_stages, group_name="privacy")
    specs = {spec.key.asset_key.path[-1]: spec for spec in [*first.check_specs, *second.check_specs]}
    assert all(spec.blocking for spec in specs.values())
    # expect_* checks exist only where the stage declares expectations.
    assert sorted(s.name for s in first.check_specs) == ["builtin_after", "builtin_before", "expect_before"]
    assert sorted(s.name for s in second.check_specs) == ["builtin_after", "builtin_before", "expect_after"]
    assert first.group_names_by_key[first.key] == "privacy"


def test_a_spec_path_is_resolved_against_base_dir(tmp_path: Path) -> None:
    spec_file = tmp_path / "pipeline.yaml"
    spec_file.write_text(TWO_STAGES, encoding="utf-8")
    (asset, _) = build_privstage_assets(spec_file, base_dir=tmp_path / "elsewhere")
    assert asset.metadata_by_key[asset.key]["output"].value == str(tmp_path / "elsewhere" / "out" / "first")


@pytest.mark.parametrize(
    ("make_spec", "message"),
    [
        (lambda tmp: tmp / "missing.yaml", "cannot read pipeline spec"),
        (lambda tmp: tmp / "bad.yaml", "unknown key"),
    ],
)
def test_an_unusable_spec_fails_at_definition_time(tmp_path: Path, make_spec: Any, message: str) -> None:
    bad = TWO_STAGES.replace("kind: pseudonymize\n", "kind: pseudonymize\n    colour: red\n", 1)
    (tmp_path / "bad.yaml").write_text(bad, encoding="utf-8")
    with pytest.raises(SpecError, match=message):
        build_privstage_assets(make_spec(tmp_path))


def test_base_dir_with_a_parsed_spec_is_refused(two_stages: PipelineSpec, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="base_dir applies to a spec path"):
        build_privstage_assets(two_stages, base_dir=tmp_path)


# ------------------------------------------------------------------------------------------ resources
@pytest.mark.parametrize(
    ("config", "provider_type", "attribute", "expected"),
    [
        ({"provider": "local", "path": "ring.json"}, LocalKeyring, "path", "{tmp}/base/ring.json"),
        ({"provider": "local"}, LocalKeyring, "path", "{tmp}/state/dev-keyring.json"),
        ({"provider": "files", "directory": "/run/secrets/keys"}, FileKeyProvider, "directory", "/run/secrets/keys"),
        ({"provider": "env"}, EnvKeyProvider, "prefix", "PRIVSTAGE_KEY_"),
        ({"provider": "env", "prefix": "CLINIC_KEY_"}, EnvKeyProvider, "prefix", "CLINIC_KEY_"),
    ],
)
def test_key_resource_builds_the_engine_provider(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    config: dict[str, str],
    provider_type: type,
    attribute: str,
    expected: str,
) -> None:
    monkeypatch.delenv("PRIVSTAGE_KEYRING", raising=False)
    provider = KeyProviderResource(**config).get_provider(tmp_path / "state", base_dir=tmp_path / "base")
    assert isinstance(provider, provider_type)
    assert str(getattr(provider, attribute)) == expected.format(tmp=tmp_path)


def test_key_resource_defaults_to_the_pipeline_keys_section(tmp_path: Path) -> None:
    provider = KeyProviderResource().get_provider(
        tmp_path, base_dir=tmp_path, default=FileKeysSpec(provider="files", directory="keys")
    )
    assert isinstance(provider, FileKeyProvider)
    assert provider.directory == tmp_path / "keys"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"provider": "files"}, "directory: Field required"),
        ({"provider": "env", "path": "ring.json"}, "path: not used by this provider"),
        ({"provider": "local", "directory": "/keys"}, "directory: not used by this provider"),
        ({"provider": "env", "prefix": "lower_case"}, "prefix: String should match pattern"),
        ({"path": "ring.json"}, "provider 'spec' takes no path"),
    ],
)
def test_key_resource_refuses_fields_its_provider_does_not_take(config: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        KeyProviderResource(**config)


def test_spark_resource_settings_win_over_the_pipeline_spark_section() -> None:
    pipeline = SparkSpec(master="local[1]", app_name="from-spec", conf={"a": "spec", "b": "spec"})
    merged = SparkResource(master="local[3]", conf={"b": "resource"}).spark_spec(pipeline)
    assert (merged.master, merged.remote, merged.app_name) == ("local[3]", None, "from-spec")
    assert merged.conf == {"a": "spec", "b": "resource"}


def test_spark_resource_refuses_key_material_in_the_spark_configuration() -> None:
    with pytest.raises(SpecError, match="key material never goes into the Spark configuration"):
        SparkResource(conf={"spark.privstage.key.material": "c2VjcmV0"}).get_session()


# ------------------------------------------------------------------------------------------ checks
def _report(phase: str, *outcomes: GuardOutcome) -> dict[str, Any]:
    return GuardReport(stage="first", phase=phase, outcomes=outcomes).to_dict()  # type: ignore[arg-type]


PASS_BEFORE = _report(
    "before",
    GuardOutcome("builtin", "not_empty", True, details={"has_rows": True}),
    GuardOutcome("expect_before", "expect_column_values_to_not_be_null", True, column="ssn",
                 details={"element_count": 5, "unexpected_count": 0}),
)  # fmt: skip
KEY = dg.AssetKey("first")


def test_guard_reports_become_one_check_result_per_family_and_phase() -> None:
    after = _report(
        "after",
        GuardOutcome("builtin", "row_count_preserved", True, details={"rows_in": 5, "rows_out": 5}),
        GuardOutcome("builtin", "no_raw_values", True, column="ssn", details={"raw_value_matches": 0}),
    )
    results = check_results_from_guards([PASS_BEFORE, after], asset_key=KEY)
    assert [(r.check_name, r.passed) for r in results] == [
        ("builtin_before", True),
        ("expect_before", True),
        ("builtin_after", True),
    ]
    assert results[2].metadata["checks"].value == 2
    assert results[2].description == "2 of 2 passed"


@pytest.mark.parametrize(
    ("blocking", "severity"),
    [(True, dg.AssetCheckSeverity.ERROR), (False, dg.AssetCheckSeverity.WARN)],
)
def test_a_failed_guard_fails_its_check_with_error_only_when_it_blocks(
    blocking: bool, severity: dg.AssetCheckSeverity
) -> None:
    after = _report(
        "after",
        GuardOutcome("builtin", "row_count_preserved", True, details={"rows_in": 5, "rows_out": 5}),
        GuardOutcome("expect_after", "expect_column_values_to_be_unique", False, blocking=blocking,
                     column="visit_id", details={"element_count": 5, "unexpected_count": 2}),
    )  # fmt: skip
    by_name = {r.check_name: r for r in check_results_from_guards([PASS_BEFORE, after], asset_key=KEY)}
    assert by_name["builtin_after"].passed
    failed = by_name["expect_after"]
    assert (failed.passed, failed.severity) == (False, severity)
    assert failed.description == "1 of 1 failed: expect_column_values_to_be_unique(visit_id)"
    assert failed.metadata["blocking_failed"].value == (1 if blocking else 0)


def test_check_metadata_keeps_counts_and_drops_expectation_arguments() -> None:
    before = _report(
        "before",
        GuardOutcome("expect_before", "expect_column_values_to_be_in_set", False, column="ssn",
                     details={"unexpected_count": 3, "value_set": ["078-05-1120"], "regex": "^x$"}),
    )  # fmt: skip
    (result,) = check_results_from_guards([before], asset_key=KEY)
    assert result.metadata["outcomes"].value == [
        {"check": "expect_column_values_to_be_in_set(ssn)", "success": False, "unexpected_count": 3}
    ]
    assert "078-05-1120" not in repr(result)


def test_only_selected_checks_report() -> None:
    selected = {dg.AssetCheckKey(KEY, "expect_before")}
    results = check_results_from_guards([PASS_BEFORE], asset_key=KEY, selected=selected)
    assert [r.check_name for r in results] == ["expect_before"]


# ------------------------------------------------------------------------------------------ errors
def test_non_retryable_errors_become_failures_that_bypass_retries() -> None:
    report = GuardReport("first", "after", (GuardOutcome("builtin", "no_raw_values", False, column="ssn"),))
    manifest = PipelineManifest(pipeline="two_stages", run_key="dagster/r/first", orchestrator="dagster")
    stage = StageManifest(name="first", kind="pseudonymize", input="/in", output="/out", guards=[report])
    manifest.stages.append(stage)
    exc = GuardFailed("after-guards blocked the stage: builtin:no_raw_values(ssn)", stage="first", report=report)
    exc.manifest = manifest  # type: ignore[attr-defined]  # as the engine attaches it

    failure = failure_from(exc)
    assert failure.allow_retries is False
    assert failure.description == "[stage first] after-guards blocked the stage: builtin:no_raw_values(ssn)"
    metadata = {k: v.value for k, v in failure.metadata.items()}
    assert metadata == {
        "error": "GuardFailed",
        "exit_code": 4,
        "retryable": False,
        "stage": "first",
        "guard_summary": {"passed": 0, "failed": 1},
        "output": "/out",
    }


def test_a_spec_error_at_run_time_fails_the_run_once_despite_a_retry_policy(two_stages: PipelineSpec) -> None:
    # The Spark resource refuses the setting before any session starts: a SpecError inside a real run.
    assets = build_privstage_assets(two_stages, retry_policy=dg.RetryPolicy(max_retries=3))
    result = dg.materialize(
        assets,
        resources=_resources(**{"spark.privstage.key": "x"}),
        selection=[dg.AssetKey("first")],
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    assert result.retry_attempts_for_node("first") == 0
    (failure,) = result.get_step_failure_events()
    data = failure.step_failure_data
    assert data.error is not None and data.error.cls_name == "Failure"
    assert data.user_failure_data is not None and data.user_failure_data.metadata["error"].value == "SpecError"


# ------------------------------------------------------------------------------------------ DP stages
DP_STAGE = """
  - name: release
    kind: dp_aggregate
    input: {stage: first}
    output: {path: "out/release/{partition}"}
    privacy_unit: patient_id
    partition: {column: visit_date, granularity: month}
    queries: [{name: visits, type: count, epsilon: 0.5}]
    budget: {dataset: visits, period: "{year}", total: {epsilon: 3, delta: 0}}
"""


@pytest.fixture()
def with_dp(tmp_path: Path) -> PipelineSpec:
    return parse_spec(TWO_STAGES + DP_STAGE, base_dir=tmp_path)


def test_a_dp_asset_is_partitioned_by_dp_partitions_def_and_needs_the_ledger_resource(with_dp: PipelineSpec) -> None:
    months = dg.MonthlyPartitionsDefinition(start_date="2025-01-01", end_date="2026-01-01")
    first, second, release = build_privstage_assets(with_dp, dp_partitions_def=months)

    assert release.partitions_def == months
    assert first.partitions_def is None and second.partitions_def is None  # the whole table, unpartitioned
    assert release.required_resource_keys - {"io_manager"} == {"spark", "privstage_keys", "privstage_ledger"}
    assert first.required_resource_keys - {"io_manager"} == {"spark", "privstage_keys"}
    metadata = release.metadata_by_key[release.key]
    assert (metadata["privstage/kind"], metadata["privstage/release_epsilon"]) == ("dp_aggregate", "0.5")
    assert metadata["privstage/budget_period"] == "{year}"
    # Without the ledger resource the definitions do not load (before any run).
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="privstage_ledger"):
        dg.Definitions(assets=[first, second, release], resources=_resources()).resolve_asset_graph()


def test_a_dp_stage_that_needs_a_partition_without_a_partitions_definition_fails_at_definition_time(
    with_dp: PipelineSpec,
) -> None:
    with pytest.raises(SpecError, match=r"\[stage release\] runs of this stage need a partition.*dp_partitions_def"):
        build_privstage_assets(with_dp)
    # partitions_def (every asset) is enough too.
    static = dg.StaticPartitionsDefinition(["2025-12"])
    assert all(a.partitions_def == static for a in build_privstage_assets(with_dp, partitions_def=static))


def test_ledger_resource_resolves_like_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRIVSTAGE_LEDGER_URL", raising=False)
    monkeypatch.delenv("PRIVSTAGE_LEDGER_URL_FILE", raising=False)
    assert BudgetLedgerResource().ledger_url(tmp_path) == f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("PRIVSTAGE_LEDGER_URL", f"sqlite:///{tmp_path / 'env.db'}")
    assert BudgetLedgerResource().ledger_url(tmp_path) == f"sqlite:///{tmp_path / 'env.db'}"
    explicit = BudgetLedgerResource(url=f"sqlite:///{tmp_path / 'given.db'}")
    assert explicit.ledger_url(tmp_path) == f"sqlite:///{tmp_path / 'given.db'}"
    with explicit.open(tmp_path) as ledger:
        assert ledger.backend == "sqlite"
        ledger.declare("visits", "2025", PrivacyBudget(1))
        assert ledger.remaining("visits", "2025") == PrivacyBudget(1)


def test_a_ledger_url_from_an_env_var_stays_out_of_the_resource_config(monkeypatch: pytest.MonkeyPatch) -> None:
    password = "canary-pw-71c2"  # noqa: S105 - a test value
    monkeypatch.setenv("PRIVSTAGE_TEST_LEDGER_URL", f"postgresql+psycopg://ledger:{password}@db:5432/privacy")
    resource = BudgetLedgerResource(url=dg.EnvVar("PRIVSTAGE_TEST_LEDGER_URL"))
    # The resource holds the variable's name; the value is read when a run uses it (the integration tests
    # scan a real instance's storage for it).
    assert "PRIVSTAGE_TEST_LEDGER_URL" in repr(resource) and password not in repr(resource)


@pytest.mark.parametrize(
    ("status", "reused_release", "spent"),
    [("succeeded", False, "0.5"), ("succeeded", True, "0"), ("reused", False, "0")],
    ids=["fresh", "from-the-ledger", "output-reused"],
)
def test_dp_metadata_says_what_this_materialization_spent(status: str, reused_release: bool, spent: str) -> None:
    dp = {
        "ledger_key": "p/release/visits/2025/2025-12",
        "dataset": "visits",
        "period": "2025",
        "budget": {"epsilon": "0.5", "delta": "0"},
        "release_sha256": "cd" * 32,
        "reused_release": reused_release,
    }
    entry = {"kind": "dp_aggregate", "status": status, "details": {"dp": dp}}
    metadata = dp_release_metadata(entry)
    assert (metadata["epsilon_spent"], metadata["delta_spent"]) == (spent, "0")
    assert metadata["reused_release"] is (spent == "0")
    assert (metadata["privstage/ledger_key"], metadata["release_sha256"]) == (dp["ledger_key"], "cd" * 32)
    assert metadata["release_epsilon"] == "0.5"
    assert dp_release_metadata({"kind": "pseudonymize", "details": {}}) == {}


def test_budget_exceeded_becomes_a_failure_that_bypasses_retries_and_names_the_ledger_key() -> None:
    exc = BudgetExceeded(
        "privacy budget exceeded for dataset 'visits', period '2025': requested ε=0.5, remaining ε=0.2",
        stage="release",
        requested=PrivacyBudget("0.5"),
        remaining=PrivacyBudget("0.2"),
        ledger_key="p/release/visits/2025/2025-12",
    )
    failure = failure_from(exc)
    assert failure.allow_retries is False
    metadata = {k: v.value for k, v in failure.metadata.items()}
    assert metadata["error"] == "BudgetExceeded" and metadata["exit_code"] == 5
    assert metadata["ledger_key"] == "p/release/visits/2025/2025-12"
    assert (metadata["requested"], metadata["remaining"]) == (str(PrivacyBudget("0.5")), str(PrivacyBudget("0.2")))

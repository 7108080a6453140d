"""The dp_aggregate stage end to end through the engine: spec checks, planning against the ledger, exact
bounded aggregates under (practically) noiseless ε, the noise that a release actually carries, retries that
return the committed release byte for byte, and bad input that fails before anything is spent or written.

ε of 10^12 makes geometric noise exactly zero (q = exp(-ε/Δ) underflows to 0.0: every draw is 0), so those
cases compare the release with a brute-force pandas reference; the noise itself is tested statistically in
test_mechanisms.py and, as the stage applies it, in ``test_release_noise_matches_the_declared_mechanism``.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import date
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from privstage.budget import BudgetLedger, LedgerKey, PrivacyBudget
from privstage.engine import RunContext, run_pipeline, validate_pipeline
from privstage.errors import BudgetExceeded, GuardFailed, SpecError
from privstage.report import write_report
from privstage.spec import parse_spec
from privstage.stages.dp_aggregate import RELEASE_NAME, partition_window, render_period

HUGE = "1000000000000"  # ε so large that geometric noise is exactly 0

SCHEMA = "patient string, dx string, visit date, cost double"


def visits_rows() -> list[tuple]:
    """30 patients in March 2026, a few in April; patient p00 has many visits (bounding must cut them)."""
    rows = []
    for i in range(30):
        unit = f"p{i:02d}"
        for j in range(1 + i % 3):
            rows.append((unit, ("A", "B", "C")[(i + j) % 3], date(2026, 3, 1 + j), float(10 * (i % 7) + j)))
    rows += [("p00", "A", date(2026, 3, 20), 99.0)] * 6  # p00: 7 rows in A in March
    rows += [("p01", "B", date(2026, 4, 2), 5.0), ("p02", "C", date(2026, 4, 3), 7.0)]
    return rows


def write_input(spark, root: Path, rows: list[tuple] | None = None, schema: str = SCHEMA) -> Path:
    path = root / "data" / "visits"
    spark.createDataFrame(rows if rows is not None else visits_rows(), schema).coalesce(1).write.parquet(str(path))
    return path


def queries(*items: str) -> dict[str, str]:
    """A ``queries`` override: one YAML flow mapping per query."""
    return {"queries": "".join(f"\n      - {{{item}}}" for item in items)}


def stage_yaml(**over: str) -> str:
    fields = {
        "queries": f"""
      - {{name: visits, type: count, epsilon: {HUGE}}}
      - {{name: patients, type: count_units, epsilon: {HUGE}}}
      - {{name: total, type: sum, column: cost, lower: 0, upper: 50, epsilon: {HUGE}}}
      - {{name: mean_cost, type: mean, column: cost, lower: 0, upper: 50, epsilon: {HUGE}}}""",
        "groups": "{public: {dx: [A, B, C, D]}}",
        "bounds": "max_groups_per_unit: 3\n    max_rows_per_group: 3",
        "budget": f'{{dataset: visits, period: "{{year}}", total: {{epsilon: {int(HUGE) * 10}, delta: 1e-6}}}}',
        "extra": "",
    }
    fields.update(over)
    return f"""\
  - name: dp
    kind: dp_aggregate
    input: {{path: data/visits}}
    output: {{path: "out/dp/{{partition}}"}}
    privacy_unit: patient
    group_by: [dx]
    groups: {fields["groups"]}
    {fields["bounds"]}
    partition: {{column: visit, granularity: month}}
    queries:{fields["queries"]}
    budget: {fields["budget"]}
{fields["extra"]}"""


def load(root: Path, stages: str, name: str = "dptest"):
    return parse_spec(f"name: {name}\nstages:\n{stages}", base_dir=root)


def run(spec, spark, ledger_url: str, partition: str | None = "2026-03", run_key: str = "test/1", **kw):
    return run_pipeline(
        spec,
        spark=spark,
        keys=None,
        context=RunContext(run_key=run_key, partition=partition),
        progress=False,
        ledger=ledger_url,
        **kw,
    )


def release(root: Path, partition: str = "2026-03") -> bytes:
    return (root / "out" / "dp" / partition / RELEASE_NAME).read_bytes()


def output(spark, root: Path, partition: str = "2026-03") -> pd.DataFrame:
    return spark.read.parquet(str(root / "out" / "dp" / partition)).toPandas().sort_values("dx").reset_index(drop=True)


def month_rows(rows: list[tuple], month: int) -> pd.DataFrame:
    """The input rows of one month of 2026 as pandas (the brute-force reference's input)."""
    df = pd.DataFrame(rows, columns=["patient", "dx", "visit", "cost"])
    return df[pd.to_datetime(df["visit"]).dt.month == month]


def bounded_count(rows: list[tuple], month: int, max_rows: int) -> int:
    """Rows kept when every (patient, dx) keeps at most ``max_rows`` (no patient exceeds the group cap here)."""
    df = month_rows(rows, month).dropna(subset=["patient"])
    return int(df.groupby(["patient", "dx"]).size().clip(upper=max_rows).sum())


# ---------------------------------------------------------------------------------------------
# Spec: bad declarations are SpecErrors before anything runs
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            queries("name: s, type: sum, column: cost, upper: 5, epsilon: 1"),
            "needs declared bounds: lower",
        ),
        (queries("name: s, type: mean, column: cost, epsilon: 1"), "lower and upper missing"),
        (queries("name: c, type: count, epsilon: 0"), "epsilon must be greater than 0"),
        (queries("name: c, type: count, epsilon: -1"), "epsilon must be greater than 0"),
        (queries("name: c, type: count, epsilon: .nan"), "epsilon"),
        (
            queries("name: c, type: count, epsilon: 1, delta: 1, mechanism: gaussian_discrete"),
            "delta must be at least 0 and less than 1",
        ),
        (queries("name: c, type: count, epsilon: 1, delta: 1e-9"), "geometric is pure"),
        (queries("name: c, type: count, epsilon: 1, mechanism: gaussian_discrete"), "needs delta > 0"),
        (queries("name: c, type: count, column: cost, epsilon: 1"), "takes no column"),
        (queries("name: s, type: sum, column: cost, lower: 5, upper: 5, epsilon: 1"), "must be below"),
        (queries("name: s, type: sum, column: cost, lower: 0, upper: .inf, epsilon: 1"), "finite"),
        (queries("name: h, type: histogram, column: cost, edges: [0, 5, 5], epsilon: 1"), "increasing"),
        (
            queries("name: q, type: quantiles, column: cost, lower: 0, upper: 9, epsilon: 1"),
            "between 0",
        ),
        (queries("name: dx, type: count, epsilon: 1"), "clash"),
        (
            queries("name: c, type: count, epsilon: 1", "name: c, type: count, epsilon: 1"),
            "unique",
        ),
        ({"groups": "null"}, "group_by needs groups"),
        ({"groups": "{public: {other: [A]}}"}, "exactly the group_by columns"),
        ({"groups": "{select: {epsilon: 1}}"}, "needs delta > 0"),
        ({"groups": "{public: {dx: [A]}, select: {epsilon: 1, delta: 1e-9}}"}, "exactly one of"),
        ({"budget": '{dataset: visits, period: "{week}", total: {epsilon: 1}}'}, "period template"),
        ({"budget": "{dataset: visits, period: '2026', total: {epsilon: 1}}"}, "more than the declared total"),
        ({"bounds": "max_groups_per_unit: 0\n    max_rows_per_group: 1"}, "max_groups_per_unit"),
    ],
)
def test_bad_declarations_are_spec_errors(tmp_path: Path, override: dict[str, str], message: str) -> None:
    with pytest.raises(SpecError) as info:
        load(tmp_path, stage_yaml(**override))
    assert message in str(info.value)


def test_partition_windows_and_period_templates() -> None:
    assert partition_window("2026-03", "month") == ("2026-03", date(2026, 3, 1), date(2026, 4, 1))
    assert partition_window("2026-12-01T00:00:00+00:00", "month") == ("2026-12", date(2026, 12, 1), date(2027, 1, 1))
    assert partition_window("2026-02-28", "day") == ("2026-02-28", date(2026, 2, 28), date(2026, 3, 1))
    assert partition_window("2026", "year") == ("2026", date(2026, 1, 1), date(2027, 1, 1))
    assert render_period("{year}", "2026-03") == "2026"
    assert render_period("q-{month}", "2026-03-05T00:00:00") == "q-2026-03"
    assert render_period("all", None) == "all"
    with pytest.raises(SpecError, match="is not a month"):
        partition_window("2026", "month")
    with pytest.raises(SpecError, match="not a valid date"):
        partition_window("2026-13", "month")
    with pytest.raises(SpecError, match="depends on the run's partition"):
        render_period("{year}", None)


# ---------------------------------------------------------------------------------------------
# Planning: no data read, nothing written; the ledger is read, never written
# ---------------------------------------------------------------------------------------------
def test_plan_states_the_allocation_and_noise_without_touching_the_ledger(spark, tmp_path: Path) -> None:
    write_input(spark, tmp_path)
    spec = load(tmp_path, stage_yaml(queries="\n      - {name: visits, type: count, epsilon: 1/3}"))
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    plan = validate_pipeline(spec, spark=spark, keys=None, partition="2026-03-17", ledger=ledger_url)
    privacy = plan.describe()["stages"][0]["privacy"]
    assert privacy["ledger_key"] == "dptest/dp/visits/2026/2026-03"
    assert privacy["budget"] == {"epsilon": "1/3", "delta": "0"}
    assert privacy["already_committed"] is False
    (part,) = privacy["queries"][0]["parts"]
    assert part["mechanism"] == "geometric" and part["sensitivity"] == 9.0  # G·R = 3·3
    assert part["scale"] == pytest.approx(27.0)
    assert privacy["sensitivities"]["count"] == {"l0": 3, "linf": 3, "l1": 9, "l2_squared": 27}
    with BudgetLedger(ledger_url) as ledger:
        assert ledger.budgets() == [] and ledger.spends() == []
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra": "    derive: {zip: 'substring(nope, 1, 3)'}"}, "derive expression"),
        (queries("name: s, type: sum, column: dx, lower: 0, upper: 1, epsilon: 1"), "must be numeric"),
        (
            queries("name: s, type: sum, column: nope, lower: 0, upper: 1, epsilon: 1"),
            "is not in the input",
        ),
        ({"groups": "{public: {dx: [1, 2]}}"}, "is not a string value"),
    ],
)
def test_plan_rejects_what_the_input_schema_contradicts(spark, tmp_path: Path, change, message) -> None:
    write_input(spark, tmp_path)
    spec = load(tmp_path, stage_yaml(**change))
    with pytest.raises(SpecError) as info:
        validate_pipeline(spec, spark=spark, keys=None, partition="2026-03", ledger=f"sqlite:///{tmp_path / 'l.db'}")
    assert message in str(info.value) and info.value.stage == "dp"


def test_a_partitioned_stage_without_a_partition_fails_before_reading(spark, tmp_path: Path) -> None:
    write_input(spark, tmp_path)
    spec = load(tmp_path, stage_yaml())
    with pytest.raises(SpecError, match="has no partition"):
        run(spec, spark, f"sqlite:///{tmp_path / 'l.db'}", partition=None)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# The release: exact bounded aggregates (noise 0 at huge ε) against a brute-force reference
# ---------------------------------------------------------------------------------------------
def test_release_equals_brute_force_reference_when_noise_is_zero(spark, tmp_path: Path) -> None:
    rows = visits_rows()
    write_input(spark, tmp_path)
    spec = load(tmp_path, stage_yaml())
    manifest = run(spec, spark, f"sqlite:///{tmp_path / 'l.db'}")
    got = output(spark, tmp_path)

    df = month_rows(rows, 3)
    # p00 has 7 A-rows in March: 1 original (cost 0.0) + 6 of cost 99; at most 3 kept, costs clamp to 50.
    # Which 3 are kept is random, but their multiset is {0, 50, 50} or {50, 50, 50}: count and units are exact.
    per_pair = df.groupby(["patient", "dx"]).size().clip(upper=3).rename("n").reset_index()
    counts = per_pair.groupby("dx")["n"].sum()
    units = per_pair.groupby("dx")["patient"].nunique()
    assert list(got["dx"]) == ["A", "B", "C", "D"]  # exactly the public groups; D is absent from the data
    assert list(got["visits"]) == [int(counts.get(d, 0)) for d in "ABCD"]
    assert list(got["patients"]) == [int(units.get(d, 0)) for d in "ABCD"]
    assert got.loc[3, "visits"] == 0 and got.loc[3, "total"] == Decimal("0.00")  # a noisy zero for D
    # B and C have no over-contributing unit: their sums and means are exact.
    for d in "BC":
        sub = df[df["dx"] == d]
        assert got.loc["ABCD".index(d), "total"] == Decimal(str(round(sub["cost"].clip(0, 50).sum(), 2))).quantize(
            Decimal("0.01")
        )
        assert got.loc["ABCD".index(d), "mean_cost"] == pytest.approx(sub["cost"].clip(0, 50).mean(), abs=1e-9)
    a_rest = df[(df["dx"] == "A") & (df["patient"] != "p00")]["cost"].clip(0, 50).sum()
    assert float(got.loc[0, "total"]) in (a_rest + 100.0, a_rest + 150.0)
    assert got.loc[3, "mean_cost"] is None or math.isnan(got.loc[3, "mean_cost"])  # no values: no mean
    assert set(got["visits_ci95"]) == {0.0}
    stage = manifest.stages[0]
    assert stage.status == "succeeded" and stage.rows_out == 4
    html_report = write_report(manifest, tmp_path / "report.json").with_suffix(".html").read_text()
    assert "privacy: ε=" in html_report and "ledger key dptest/dp/visits/2026/2026-03" in html_report
    checks = {(o.check, o.success) for report in stage.guards for o in report.outcomes}
    assert {("release_schema", True), ("release_groups", True), ("ledger_within_budget", True)} <= checks
    assert stage.details["dp"]["reused_release"] is False
    assert stage.details["dp"]["release_sha256"] == hashlib.sha256(release(tmp_path)).hexdigest()


def test_contribution_bounds_cap_each_units_rows_and_groups(spark, tmp_path: Path) -> None:
    # One unit in all of A..E with 5 rows each: with G = 2, R = 1 it counts once in exactly two groups.
    rows = [("u", g, date(2026, 3, 1 + i), 1.0) for g in "ABCDE" for i in range(5)]
    write_input(spark, tmp_path, rows)
    spec = load(
        tmp_path,
        stage_yaml(
            groups="{public: {dx: [A, B, C, D, E]}}",
            bounds="max_groups_per_unit: 2\n    max_rows_per_group: 1",
            queries=f"\n      - {{name: visits, type: count, epsilon: {HUGE}}}",
        ),
    )
    run(spec, spark, f"sqlite:///{tmp_path / 'l.db'}")
    got = output(spark, tmp_path)
    assert sorted(got["visits"]) == [0, 0, 0, 1, 1]


def test_histogram_quantiles_and_variance(spark, tmp_path: Path) -> None:
    rows = [(f"u{i}", "A", date(2026, 3, 1), float(i)) for i in range(100)]  # costs 0..99, one row per unit
    write_input(spark, tmp_path, rows)
    queries = f"""
      - {{name: hist, type: histogram, column: cost, edges: [0, 10, 50, 100], epsilon: {HUGE}}}
      - {{name: q, type: quantiles, column: cost, lower: 0, upper: 100, bins: 100, quantiles: [0.25, 0.5, 0.9],
         epsilon: {HUGE}}}
      - {{name: var, type: variance, column: cost, lower: 0, upper: 100, epsilon: {HUGE}}}"""
    spec = load(tmp_path, stage_yaml(groups="{public: {dx: [A]}}", queries=queries))
    run(spec, spark, f"sqlite:///{tmp_path / 'l.db'}")
    got = output(spark, tmp_path).iloc[0]
    assert list(got["hist"]) == [10, 40, 50]
    assert list(got["q"]) == pytest.approx([25.0, 50.0, 90.0])
    assert got["var"] == pytest.approx(pd.Series(range(100), dtype=float).var(ddof=0))


# ---------------------------------------------------------------------------------------------
# Noise as the release carries it
# ---------------------------------------------------------------------------------------------
def test_release_noise_matches_the_declared_mechanism(spark, tmp_path: Path) -> None:
    """2,000 public groups absent from the data: each released count is pure noise from one geometric draw
    with Δ = G·R = 2, ε = 1 (q = e^-1/2). Chi-squared goodness of fit over |k| <= 6 plus the two tails;
    false-failure rate alpha = 1e-4 (and the same draws must reject a 2x wider scale)."""
    write_input(spark, tmp_path)
    keys = ", ".join(f"G{i:04d}" for i in range(2000))
    spec = load(
        tmp_path,
        stage_yaml(
            groups=f"{{public: {{dx: [{keys}]}}}}",
            bounds="max_groups_per_unit: 2\n    max_rows_per_group: 1",
            queries="\n      - {name: visits, type: count, epsilon: 1}",
            extra="    clamp_counts: false",
            budget="{dataset: visits, period: '2026', total: {epsilon: 1}}",
        ),
    )
    run(spec, spark, f"sqlite:///{tmp_path / 'l.db'}")
    draws = output(spark, tmp_path)["visits"].to_numpy()
    assert len(draws) == 2000

    def p_value(q: float) -> float:
        pmf = {k: (1 - q) / (1 + q) * q ** abs(k) for k in range(-6, 7)}
        tail = q**7 / (1 + q)
        cells = [(draws < -6).sum()] + [(draws == k).sum() for k in range(-6, 7)] + [(draws > 6).sum()]
        expected = [tail] + [pmf[k] for k in range(-6, 7)] + [tail]
        return stats.chisquare(cells, [e * len(draws) for e in expected]).pvalue

    assert p_value(math.exp(-0.5)) > 1e-4
    assert p_value(math.exp(-0.25)) < 1e-4


def test_private_partition_selection_never_releases_a_lone_units_group(spark, tmp_path: Path) -> None:
    rows = [(f"u{i}", "BIG", date(2026, 3, 1), 1.0) for i in range(200)] + [("lone", "SOLO", date(2026, 3, 1), 1.0)]
    write_input(spark, tmp_path, rows)
    spec = load(
        tmp_path,
        stage_yaml(
            groups="{select: {epsilon: 1, delta: 1e-9}}",
            bounds="max_groups_per_unit: 1\n    max_rows_per_group: 1",
            queries=f"\n      - {{name: visits, type: count, epsilon: {HUGE}}}",
        ),
    )
    plan = validate_pipeline(spec, spark=spark, keys=None, partition="2026-03", ledger=f"sqlite:///{tmp_path / 'l.db'}")
    threshold = plan.describe()["stages"][0]["privacy"]["partition_selection"]["threshold_distinct_units"]
    q = math.exp(-1.0)
    # The threshold is the smallest τ with P(1 + noise >= τ) = q^(τ-1)/(1+q) <= δ / G.
    assert q ** (threshold - 1) / (1 + q) <= 1e-9 < q ** (threshold - 2) / (1 + q)
    run(spec, spark, f"sqlite:///{tmp_path / 'l.db'}")
    got = output(spark, tmp_path)
    assert list(got["dx"]) == ["BIG"] and list(got["visits"]) == [200]


# ---------------------------------------------------------------------------------------------
# Retries and the ledger
# ---------------------------------------------------------------------------------------------
def test_a_second_run_of_the_same_release_returns_it_byte_for_byte_and_spends_nothing(
    spark, tmp_path: Path, ledger_url: str
) -> None:
    write_input(spark, tmp_path)
    spec = load(
        tmp_path,
        stage_yaml(
            queries="\n      - {name: visits, type: count, epsilon: 1}\n"
            "      - {name: total, type: sum, column: cost, lower: 0, upper: 50, epsilon: 1/2}",
            budget="{dataset: visits, period: '{year}', total: {epsilon: 3, delta: 0}}",
        ),
    )
    first = run(spec, spark, ledger_url, run_key="airflow/dag/run-1/dp")
    first_bytes, first_rows = release(tmp_path), output(spark, tmp_path)
    # Another DAG run for the same logical date: a new run key, the same ledger key.
    second = run(spec, spark, ledger_url, run_key="airflow/dag/run-2/dp")
    assert second.stages[0].status == "reused"
    assert release(tmp_path) == first_bytes
    pd.testing.assert_frame_equal(output(spark, tmp_path), first_rows)
    # The output deleted (a lost volume): the ledger's committed release rebuilds it, byte for byte, no spend.
    import shutil

    shutil.rmtree(tmp_path / "out")
    third = run(spec, spark, ledger_url, run_key="cli/again")
    assert third.stages[0].details["dp"]["reused_release"] is True
    assert release(tmp_path) == first_bytes
    with BudgetLedger(ledger_url) as ledger:
        (status,) = ledger.budgets()
        assert status.committed == PrivacyBudget("3/2") and status.reserved == PrivacyBudget.zero()
        (spend,) = ledger.spends()
        assert spend.state == "committed" and spend.release_sha256 == hashlib.sha256(first_bytes).hexdigest()
    assert first.stages[0].details["dp"]["release_sha256"] == spend.release_sha256
    # A new month is a new release: it spends again, and the third month no longer fits ε = 3.
    run(spec, spark, ledger_url, partition="2026-04", run_key="cli/april")
    with pytest.raises(BudgetExceeded) as info:
        run(spec, spark, ledger_url, partition="2026-05", run_key="cli/may")
    assert "requested (ε=1.5, δ=0), remaining (ε=0, δ=0) of (ε=3, δ=0)" in str(info.value)
    assert info.value.ledger_key == "dptest/dp/visits/2026/2026-05"
    assert not (tmp_path / "out" / "dp" / "2026-05").exists()


def test_an_attempt_that_dies_after_noise_spends_once_and_cannot_publish(
    spark, tmp_path: Path, ledger_url: str
) -> None:
    """Reserve and noise by hand, then 'die' (never commit): the retry takes the reservation over, commits once;
    the dead attempt's late commit is refused, so a second noisy figure cannot be published."""
    from privstage.budget import ReservationLost
    from privstage.engine import PlanEnv, plan_pipeline
    from privstage.stages import dp_aggregate

    write_input(spark, tmp_path)
    spec = load(tmp_path, stage_yaml(queries="\n      - {name: visits, type: count, epsilon: 1}"))
    env = PlanEnv(spec, run_key="dead", partition="2026-03", ledger=ledger_url)
    plan = plan_pipeline(spec, spark=spark, keys=None, env=env).stages[0]  # type: ignore[arg-type]
    df = dp_aggregate.narrow(spark.read.parquet(plan.input_path), plan.detail)
    dead = dp_aggregate.produce(df, plan.detail, spark=spark, run=None)  # reserved, noised; then the process dies
    with BudgetLedger(ledger_url) as ledger:
        assert [s.state for s in ledger.spends()] == ["reserved"]
    assert not (tmp_path / "out").exists()

    run(spec, spark, ledger_url, run_key="retry")
    with pytest.raises(ReservationLost):
        dead.before_commit()  # the zombie wakes up
    env.close()
    with BudgetLedger(ledger_url) as ledger:
        (spend,) = ledger.spends()
        assert spend.state == "committed" and spend.budget == PrivacyBudget(1)
        assert spend.release_sha256 == hashlib.sha256(release(tmp_path)).hexdigest()
    assert (tmp_path / "out" / "dp" / "2026-03" / RELEASE_NAME).read_bytes() == release(tmp_path)


def test_a_failing_guard_after_noise_releases_the_reservation(spark, tmp_path: Path, ledger_url: str) -> None:
    write_input(spark, tmp_path)
    blocking = "    expect_after:\n      - {type: expect_table_row_count_to_equal, kwargs: {value: 99}}"
    spec = load(tmp_path, stage_yaml(queries="\n      - {name: visits, type: count, epsilon: 1}", extra=blocking))
    with pytest.raises(GuardFailed):
        run(spec, spark, ledger_url)
    assert not (tmp_path / "out" / "dp").exists() or not any((tmp_path / "out" / "dp").iterdir())
    with BudgetLedger(ledger_url) as ledger:
        assert [s.state for s in ledger.spends()] == ["released"]
        assert ledger.budgets()[0].committed == PrivacyBudget.zero()


# ---------------------------------------------------------------------------------------------
# Bad data: typed errors before the noise step, nothing spent, nothing written
# ---------------------------------------------------------------------------------------------
def test_invalid_values_are_dropped_and_counted_or_refused(spark, tmp_path: Path) -> None:
    rows = [("a", "A", date(2026, 3, 1), 10.0), ("b", "A", date(2026, 3, 1), float("nan"))]
    rows += [("c", "A", date(2026, 3, 1), float("inf")), ("d", "A", date(2026, 3, 1), None)]
    write_input(spark, tmp_path, rows)
    queries = f"\n      - {{name: mean_cost, type: mean, column: cost, lower: 0, upper: 50, epsilon: {HUGE}}}"
    spec = load(tmp_path, stage_yaml(groups="{public: {dx: [A]}}", queries=queries))
    manifest = run(spec, spark, f"sqlite:///{tmp_path / 'l.db'}")
    assert manifest.stages[0].details["dp"]["invalid_values_dropped"] == {"cost": 3}
    assert output(spark, tmp_path).loc[0, "mean_cost"] == pytest.approx(10.0)

    strict = load(tmp_path, stage_yaml(groups="{public: {dx: [A]}}", queries=queries, extra="    on_invalid: error"))
    ledger_url = f"sqlite:///{tmp_path / 'strict.db'}"
    with pytest.raises(GuardFailed, match="3 null, NaN or infinite values"):
        run(strict, spark, ledger_url, partition="2026-03", run_key="strict", overwrite=True)
    with BudgetLedger(ledger_url) as ledger:
        assert [s.state for s in ledger.spends()] == ["released"]


def test_null_privacy_units_are_refused_by_default_and_dropped_on_request(spark, tmp_path: Path) -> None:
    rows = [*visits_rows(), (None, "A", date(2026, 3, 2), 1.0)]
    write_input(spark, tmp_path, rows)
    ledger_url = f"sqlite:///{tmp_path / 'l.db'}"
    with pytest.raises(GuardFailed, match=r"no_nulls\(patient\)"):
        run(load(tmp_path, stage_yaml()), spark, ledger_url)
    with BudgetLedger(ledger_url) as ledger:
        assert ledger.spends() == []  # refused before the reservation
    run(load(tmp_path, stage_yaml(extra="    on_null_unit: drop")), spark, ledger_url, run_key="drop")
    assert output(spark, tmp_path)["visits"].sum() == bounded_count(rows, 3, 3)


def test_an_empty_partition_is_refused_before_anything_is_spent(spark, tmp_path: Path) -> None:
    write_input(spark, tmp_path)
    ledger_url = f"sqlite:///{tmp_path / 'l.db'}"
    with pytest.raises(GuardFailed, match="not_empty"):
        run(load(tmp_path, stage_yaml()), spark, ledger_url, partition="2025-01")
    with BudgetLedger(ledger_url) as ledger:
        assert ledger.spends() == []


def test_a_declared_total_cannot_change(spark, tmp_path: Path) -> None:
    write_input(spark, tmp_path)
    ledger_url = f"sqlite:///{tmp_path / 'l.db'}"
    run(load(tmp_path, stage_yaml()), spark, ledger_url)
    changed = stage_yaml(budget=f'{{dataset: visits, period: "{{year}}", total: {{epsilon: {int(HUGE) * 11}}}}}')
    with pytest.raises(SpecError, match="a declared total never changes"):
        run(load(tmp_path, changed), spark, ledger_url, partition="2026-04")


def test_release_file_is_canonical_json_without_raw_values(spark, tmp_path: Path) -> None:
    write_input(spark, tmp_path)
    run(load(tmp_path, stage_yaml()), spark, f"sqlite:///{tmp_path / 'l.db'}")
    data = release(tmp_path)
    parsed = json.loads(data)
    assert json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode() == data
    assert parsed["ledger_key"] == "dptest/dp/visits/2026/2026-03"
    accuracy = {a["query"]: a["parts"] for a in parsed["accuracy"]}
    assert [p["part"] for p in accuracy["mean_cost"]] == ["value_count", "centred_sum"]
    assert {p["mechanism"] for parts in accuracy.values() for p in parts} == {"geometric"}
    text = data.decode() + (tmp_path / "out" / "dp" / "2026-03" / "_privstage_manifest.json").read_text()
    assert not any(f"p{i:02d}" in text for i in range(30))  # no privacy unit id leaks into release or manifest
    assert LedgerKey.parse(parsed["ledger_key"]).partition == "2026-03"


# ---------------------------------------------------------------------------------------------
# The command line: plan shows the allocation, run spends, budget show lists it, exit code 5
# ---------------------------------------------------------------------------------------------
def test_cli_plan_run_budget_show_and_budget_exceeded(spark, tmp_path: Path, capsys) -> None:
    from privstage.cli import main
    from privstage.errors import EXIT_CODES

    write_input(spark, tmp_path)
    spec_path = tmp_path / "pipeline.yaml"
    stage = stage_yaml(
        **queries("name: visits, type: count, epsilon: 1/2", "name: units, type: count_units, epsilon: 1/4"),
        budget="{dataset: visits, period: '{year}', total: {epsilon: 1}}",
    )
    spec_path.write_text(f"name: dptest\nstages:\n{stage}", encoding="utf-8")
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    common = [str(spec_path), "--ledger", ledger]

    assert main(["plan", *common, "--partition", "2026-03"]) == 0
    out = capsys.readouterr().out
    assert "ledger  dptest/dp/visits/2026/2026-03 (fits what remains)" in out
    assert "budget  ε=0.75 δ=0 of the declared ε=1 δ=0 for visits / 2026" in out
    assert "query   visits (count) ε=0.5 δ=0: count geometric scale 18" in out

    assert main(["run", *common, "--partition", "2026-03", "--no-progress"]) == 0
    assert main(["plan", *common, "--partition", "2026-03"]) == 0
    assert "already committed" in capsys.readouterr().out
    assert main(["budget", "show", "--ledger", ledger]) == 0
    shown = capsys.readouterr().out
    assert "visits / 2026: total (ε=1, δ=0), committed (ε=0.75, δ=0)" in shown
    assert "committed ε=0.75 δ=0  dptest/dp/visits/2026/2026-03" in shown

    assert main(["plan", *common, "--partition", "2026-04"]) == EXIT_CODES["BudgetExceeded"] == 5
    capsys.readouterr()
    assert main(["run", *common, "--partition", "2026-04", "--no-progress"]) == 5
    err = capsys.readouterr().err
    assert "BudgetExceeded" in err and "remaining (ε=0.25" in err.replace("\n", "")
    assert not (tmp_path / "out" / "dp" / "2026-04").exists()
    assert main(["run", *common, "--no-progress"]) == EXIT_CODES["SpecError"]
    assert "has no partition" in capsys.readouterr().err.replace("\n", " ")


def test_mean_and_variance_are_exact_when_bounds_are_not_multiples_of_the_precision(spark, tmp_path: Path) -> None:
    rows = [("a", "A", date(2026, 3, 1), 10.0), ("b", "A", date(2026, 3, 2), 20.0)]
    write_input(spark, tmp_path, rows)
    spec = load(
        tmp_path,
        stage_yaml(
            groups="{public: {dx: [A]}}",
            **queries(
                f"name: m, type: mean, column: cost, lower: 0.001, upper: 50, epsilon: {HUGE}",
                f"name: v, type: variance, column: cost, lower: 0.001, upper: 50, epsilon: {HUGE}",
            ),
        ),
    )
    run(spec, spark, f"sqlite:///{tmp_path / 'l.db'}")
    got = output(spark, tmp_path).iloc[0]
    assert got["m"] == 15.0 and got["v"] == 25.0 and got["m_ci95"] == 0.0


@pytest.mark.parametrize(
    ("rows", "public", "ok", "counts"),
    [
        ([("A", 1), ("B", 2)], [("A",), ("B",)], True, {"missing": 0, "undeclared": 0, "repeated_groups": 0}),
        ([("A", 1)], [("A",), ("B",)], False, {"missing": 1, "undeclared": 0}),
        ([("A", 1), ("Z", 2)], [("A",)], False, {"missing": 0, "undeclared": 1}),
        ([("A", 1), ("A", 2)], [("A",)], False, {"repeated_groups": 1}),
        ([(None, 1), ("A", 2)], [(None,), ("A",)], True, {"missing": 0, "undeclared": 0}),
        ([("A", 1), ("A", 2)], None, False, {"repeated_groups": 1}),
        ([("A", 1), ("B", 2)], None, True, {"rows": 2}),
    ],
)
def test_release_shape_guard_catches_missing_undeclared_and_repeated_groups(spark, rows, public, ok, counts) -> None:
    from pyspark.sql import types as T

    from privstage.guards.base import GuardContext
    from privstage.stages.dp_aggregate import ReleaseShapeGuard

    schema = T.StructType([T.StructField("dx", T.StringType()), T.StructField("visits", T.LongType())])
    guard = ReleaseShapeGuard(schema, ("dx",), None if public is None else tuple(public))
    data = GuardContext("dp", "after", spark.createDataFrame(rows, schema))
    outcomes = {o.check: o for o in guard.check(data)}
    assert outcomes["release_schema"].success
    assert outcomes["release_groups"].success is ok
    assert counts.items() <= outcomes["release_groups"].details.items()
    wrong = T.StructType([T.StructField("dx", T.StringType()), T.StructField("visits", T.IntegerType())])
    bad_schema = ReleaseShapeGuard(wrong, ("dx",), None).check(
        GuardContext("dp", "after", spark.createDataFrame(rows, schema))
    )
    assert not bad_schema[0].success

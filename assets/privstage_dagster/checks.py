"""privstage guards as Dagster blocking asset checks.

Each stage asset declares up to four checks, one per guard family and phase:

==================  ===========================================================================
``builtin_before``  privstage's own guards on the stage input (e.g. not empty)
``expect_before``   the stage's ``expect_before`` Great Expectations suite (declared if non-empty)
``builtin_after``   privstage's own guards on the staged output (row count, nulls, no raw values)
``expect_after``    the stage's ``expect_after`` suite (declared if non-empty)
==================  ===========================================================================

An ``anonymize`` stage's built-in after-guards are its privacy model, so its asset declares them as
checks of their own instead of ``builtin_after``: ``k_anonymity``, ``l_diversity`` (when the stage
declares ``l``) and ``no_plaintext_pii``, each computed on the staged release before it is committed.

The checks are *blocking*, but the engine is what blocks: it runs the guards, and a failing
blocking guard stops the stage before its output is committed. The results here report what the
engine decided. Check metadata holds counts, check names and column names only: guard outcomes
never carry data values, and the expectation arguments they may carry are left out as well.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from dagster import AssetCheckKey, AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey

from privstage.spec import StageSpec

__all__ = ["CHECK_DESCRIPTIONS", "check_results_from_guards", "check_specs_for_stage"]

PHASES = ("before", "after")

CHECK_DESCRIPTIONS: Mapping[str, str] = {
    "builtin_before": "privstage built-in guards on the stage input.",
    "expect_before": "The stage's expect_before Great Expectations suite, on the stage input.",
    "builtin_after": "privstage built-in guards on the staged output, before it is committed.",
    "k_anonymity": "Every combination of the quasi-identifiers occurs at least k times in the staged release.",
    "l_diversity": "Every class of the staged release holds at least l distinct sensitive values.",
    "no_plaintext_pii": "No released text value has the shape of a direct identifier (e-mail, SSN, card, ...).",
    "expect_after": "The stage's expect_after Great Expectations suite, on the staged output.",
}
#: The anonymize stage's built-in guards (guard name 'anonymize'), by outcome check name.
_ANONYMITY_CHECKS: Mapping[str, str] = {
    "expect_k_anonymity": "k_anonymity",
    "expect_l_diversity": "l_diversity",
    "expect_no_plaintext_pii": "no_plaintext_pii",
}


def _check_name(guard: str, phase: str, check: str = "") -> str:
    # The engine names the guard running a stage's suite 'expect_<phase>'; every other guard is built in.
    if guard == f"expect_{phase}":
        return guard
    if guard == "anonymize" and check in _ANONYMITY_CHECKS:
        return _ANONYMITY_CHECKS[check]
    return f"builtin_{phase}"


def check_specs_for_stage(stage: StageSpec, asset_key: AssetKey) -> list[AssetCheckSpec]:
    """The blocking checks a stage asset declares."""
    names: list[str] = []
    for phase, expectations in (("before", stage.expect_before), ("after", stage.expect_after)):
        if stage.kind == "anonymize" and phase == "after":
            names += ["k_anonymity", *(["l_diversity"] if getattr(stage, "l", None) else []), "no_plaintext_pii"]
        elif stage.kind != "anonymize":  # the anonymize stage has no built-in before-guards
            names.append(f"builtin_{phase}")
        if expectations:
            names.append(f"expect_{phase}")
    return [
        AssetCheckSpec(name=name, asset=asset_key, blocking=True, description=CHECK_DESCRIPTIONS[name])
        for name in names
    ]


def _label(outcome: Mapping[str, Any]) -> str:
    return f"{outcome['check']}({outcome['column']})" if outcome.get("column") else str(outcome["check"])


def _counts(details: Mapping[str, Any]) -> dict[str, int | float]:
    # Numbers (and flags) only: expectation arguments such as value sets or regexes stay out of Dagster.
    return {k: v for k, v in details.items() if isinstance(v, int | float)}


def check_results_from_guards(
    reports: Iterable[Mapping[str, Any]],
    *,
    asset_key: AssetKey,
    selected: Collection[AssetCheckKey] | None = None,
) -> list[AssetCheckResult]:
    """One check result per guard family and phase that ran.

    Args:
        reports: ``GuardReport.to_dict()`` records of one stage (from the run manifest).
        asset_key: the stage's asset.
        selected: the check keys selected in this run; results of other checks are left out.

    A family fails if any of its outcomes failed; its severity is ERROR if a failed outcome was
    blocking (the stage was stopped) and WARN otherwise (the stage went on).
    """
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for report in reports:
        for outcome in report["outcomes"]:
            grouped.setdefault(_check_name(outcome["guard"], report["phase"], outcome["check"]), []).append(outcome)

    results = []
    for name in CHECK_DESCRIPTIONS:  # declaration order
        outcomes = grouped.get(name)
        if not outcomes or (selected is not None and AssetCheckKey(asset_key, name) not in selected):
            continue
        failed = [o for o in outcomes if not o["success"]]
        blocking_failed = [o for o in failed if o.get("blocking", True)]
        severity = AssetCheckSeverity.ERROR if blocking_failed or not failed else AssetCheckSeverity.WARN
        description = (
            f"{len(outcomes)} of {len(outcomes)} passed"
            if not failed
            else f"{len(failed)} of {len(outcomes)} failed: {', '.join(_label(o) for o in failed)}"
        )
        results.append(
            AssetCheckResult(
                asset_key=asset_key,
                check_name=name,
                passed=not failed,
                severity=severity,
                description=description,
                metadata={
                    "checks": len(outcomes),
                    "failed": len(failed),
                    "blocking_failed": len(blocking_failed),
                    "outcomes": [
                        {"check": _label(o), "success": bool(o["success"]), **_counts(o.get("details") or {})}
                        for o in outcomes
                    ],
                },
            )
        )
    return results

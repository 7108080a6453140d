"""Run manifests and the run report.

A manifest is what crosses process boundaries (XCom, Dagster metadata, logs, the report file):
paths, row counts, key ids and versions, guard outcomes, timings. Never data, never keys.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from privstage.__about__ import __version__
from privstage.guards.base import GuardReport
from privstage.io import write_json_atomic

__all__ = ["PipelineManifest", "StageManifest", "write_report"]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class StageManifest:
    name: str
    kind: str
    input: str
    output: str
    status: str = "running"
    rows_in: int | None = None
    rows_out: int | None = None
    key_ids: list[str] = field(default_factory=list)
    key_versions: dict[str, int] = field(default_factory=dict)
    guards: list[GuardReport] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None

    def guard_summary(self) -> dict[str, int]:
        outcomes = [o for r in self.guards for o in r.outcomes]
        return {"passed": sum(o.success for o in outcomes), "failed": sum(not o.success for o in outcomes)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "input": self.input,
            "output": self.output,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "key_ids": list(self.key_ids),
            "key_versions": dict(self.key_versions),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "guards": [g.to_dict() for g in self.guards],
            "guard_summary": self.guard_summary(),
            "details": dict(self.details),
            "error": self.error,
        }


@dataclass
class PipelineManifest:
    pipeline: str
    run_key: str
    orchestrator: str
    partition: str | None = None
    attempt: int = 1
    status: str = "running"
    started_at: str = field(default_factory=utc_now)
    finished_at: str | None = None
    duration_s: float | None = None
    stages: list[StageManifest] = field(default_factory=list)
    error: dict[str, Any] | None = None
    privstage_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "run_key": self.run_key,
            "orchestrator": self.orchestrator,
            "partition": self.partition,
            "attempt": self.attempt,
            "privstage_version": self.privstage_version,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
            "stages": [s.to_dict() for s in self.stages],
            "error": self.error,
        }


def _anonymize_text(anon: dict[str, Any]) -> str:
    """One line of an anonymize stage's risk and utility report (counts, shares and levels; no value)."""
    risk = anon.get("risk") or {}
    levels = ", ".join(f"{c} {lv}/{anon['top_levels'].get(c)}" for c, lv in anon.get("levels", {}).items())
    at_risk = risk.get("records_at_risk_above") or {}
    threshold = str(round(1 / anon["k"], 6)) if anon.get("k") else None
    return (
        f"anonymity: {anon['model']}; smallest class {risk.get('min_class_size')}, {risk.get('classes')} classes, "
        f"smallest l {risk.get('min_l')}; generalization levels {levels}; suppressed {anon['suppressed_rows']} of "
        f"{anon['rows_in']} rows (limit {anon['suppression_limit_rows']}); discernibility {anon['discernibility']} "
        f"(normalized {anon['normalized_discernibility']}); max prosecutor risk {risk.get('prosecutor_risk_max')}"
        + (f", records above 1/k risk {at_risk.get(threshold)}" if threshold in at_risk else "")
        + f"; class sizes {risk.get('class_size_histogram')}"
    )


def _html(manifest: dict[str, Any]) -> str:
    rows = []
    for s in manifest["stages"]:
        guards = "".join(
            f"<li>{html.escape(g['phase'])}: "
            + ", ".join(
                f"{html.escape(o['check'])}{'(' + html.escape(o['column']) + ')' if o['column'] else ''}="
                f"{'ok' if o['success'] else '<b>FAILED</b>'}"
                for o in g["outcomes"]
            )
            + "</li>"
            for g in s["guards"]
        )
        dp = (s.get("details") or {}).get("dp")
        if dp:
            budget, reused = dp["budget"], " (release reused, nothing spent)" if dp.get("reused_release") else ""
            text = (
                f"privacy: ε={budget['epsilon']} δ={budget['delta']} charged to {dp['dataset']} / {dp['period']}; "
                f"ledger key {dp['ledger_key']}{reused}"
            )
            guards += f"<li>{html.escape(text)}</li>"
        anon = (s.get("details") or {}).get("anonymize")
        if anon:
            guards += f"<li>{html.escape(_anonymize_text(anon))}</li>"
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(v))}</td>"
                for v in (s["name"], s["kind"], s["status"], s["rows_in"], s["rows_out"], ", ".join(s["key_ids"]))
            )
            + f"<td><ul>{guards}</ul></td></tr>"
        )
    return (
        "<!doctype html><meta charset='utf-8'><title>privstage run report</title>"
        f"<h1>{html.escape(manifest['pipeline'])}: {html.escape(manifest['status'])}</h1>"
        f"<p>run key {html.escape(manifest['run_key'])} · privstage {html.escape(manifest['privstage_version'])}"
        f" · {manifest['duration_s']} s</p>"
        "<table border=1 cellpadding=4><tr><th>stage</th><th>kind</th><th>status</th><th>rows in</th>"
        "<th>rows out</th><th>key ids</th><th>guards</th></tr>" + "".join(rows) + "</table>"
    )


def write_report(manifest: PipelineManifest, path: str | Path) -> Path:
    """Write the JSON report at ``path`` and an HTML page beside it (``.html``)."""
    target = Path(path)
    data = manifest.to_dict()
    write_json_atomic(target, data)
    target.with_suffix(".html").write_text(_html(data), encoding="utf-8")
    return target

"""The ``privstage`` command line.

Exit codes (one source of truth: :data:`privstage.errors.EXIT_CODES`): 0 success, 1 a stage failed
while running (retryable), 2 usage, 3 SpecError, 4 GuardFailed, 5 BudgetExceeded, 6 KeyUnavailable,
7 IntegrityError, 8 HEParameterError.

``privstage scan DATASET`` classifies columns (kinds and confidences, never a value) and can write a
starting ``kind: anonymize`` spec.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from privstage.__about__ import __version__
from privstage.errors import PrivstageError, exit_code_for

__all__ = ["main"]

DEMO_ROWS = 5000
#: The month the demo's DP release aggregates: the last month of the sample visits (2024-01-01 + 731 days).
DEMO_PARTITION = "2025-12"


def _err(message: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False).print(f"[bold red]error:[/bold red] {message}", markup=True)


def _load(args: argparse.Namespace) -> Any:
    from privstage.spec import load_spec

    return load_spec(args.spec, base_dir=args.base_dir)


def _cmd_validate(args: argparse.Namespace) -> int:
    from privstage.engine import validate_pipeline

    spec = _load(args)
    plan = validate_pipeline(
        spec, stages=args.stage or None, overwrite=args.overwrite, partition=args.partition, ledger=args.ledger
    )
    print(
        f"{args.spec}: valid ({len(plan.stages)} stage{'s' if len(plan.stages) != 1 else ''}: "
        f"{', '.join(s.spec.name for s in plan.stages)})"
    )
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from privstage.engine import validate_pipeline

    spec = _load(args)
    plan = validate_pipeline(
        spec, stages=args.stage or None, overwrite=args.overwrite, partition=args.partition, ledger=args.ledger
    )
    description = plan.describe()
    if args.json:
        print(json.dumps(description, indent=2))
        return 0
    print(f"pipeline {description['pipeline']}: {len(plan.stages)} stage(s)")
    for i, s in enumerate(description["stages"], start=1):
        keys = ", ".join(f"{k} v{v}" for k, v in s["key_versions"].items()) or "none"
        print(f"  [{i}] {s['stage']} ({s['kind']})")
        print(f"      input   {s['input']}")
        print(f"      output  {s['output']}{' (overwrite)' if s['overwrite'] else ''}")
        print(f"      keys    {keys}")
        print(f"      guards  {s['guards_before']} before, {s['guards_after']} after")
        privacy = s.get("privacy")
        if privacy:
            _print_privacy(privacy)
    return 0


def _print_privacy(privacy: dict[str, Any]) -> None:
    """The budget allocation of a DP stage, as ``privstage plan`` shows it."""
    budget, total = privacy["budget"], privacy["declared_total"]
    state = (
        "already committed: a run returns the committed release and spends nothing"
        if privacy["already_committed"]
        else "fits what remains"
    )
    print(f"      ledger  {privacy['ledger_key']} ({state})")
    print(
        f"      budget  ε={budget['epsilon']} δ={budget['delta']} of the declared ε={total['epsilon']} "
        f"δ={total['delta']} for {privacy['dataset']} / {privacy['period']}"
    )
    print(
        f"      bounds  {privacy['max_groups_per_unit']} group(s) per unit, {privacy['max_rows_per_group']} row(s) per "
        f"group; groups: {privacy['groups']}"
    )
    selection = privacy.get("partition_selection")
    if selection:
        threshold = selection["threshold_distinct_units"]
        eps, delta = selection["epsilon"], selection["delta"]
        print(f"      groups  private selection, ε={eps} δ={delta}: threshold {threshold}")
    for q in privacy["queries"]:
        parts = "; ".join(
            f"{p['part']} {p['mechanism']} scale {p['scale']:.4g} ±{p['ci95_half_width']:.4g}" for p in q["parts"]
        )
        print(f"      query   {q['name']} ({q['type']}) ε={q['epsilon']} δ={q['delta']}: {parts}")


def _cmd_run(args: argparse.Namespace) -> int:
    from privstage.engine import RunContext, run_pipeline

    spec = _load(args)
    progress = False if args.no_progress else True
    context = RunContext(run_key=f"cli/{spec.name}/{uuid.uuid4().hex[:12]}", partition=args.partition)
    manifest = run_pipeline(
        spec,
        stages=args.stage or None,
        context=context,
        progress=progress,
        report_path=args.report,
        overwrite=args.overwrite,
        ledger=args.ledger,
    )
    for s in manifest.stages:
        print(f"{s.name}: {s.rows_in} rows in, {s.rows_out} rows out -> {s.output}")
    if args.report:
        print(f"report: {Path(args.report).resolve()}")
    return 0


def _demo_spec() -> Path:
    from importlib import resources

    packaged = resources.files("privstage") / "_examples" / "clinic_visits" / "pipeline.yaml"
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "pipelines" / "clinic_visits" / "pipeline.yaml"


def _cmd_demo(args: argparse.Namespace) -> int:
    from privstage.engine import RunContext, run_pipeline
    from privstage.keys import LocalKeyring, default_keyring_path
    from privstage.sample_data import write_clinic_visits
    from privstage.spark import get_session
    from privstage.spec import load_spec

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path = Path(args.spec) if args.spec else _demo_spec()
    spec = load_spec(spec_path, base_dir=workdir)
    print(f"privstage demo: pipeline {spec_path}")
    print(f"  working directory {workdir}")
    keyring = default_keyring_path(spec.state_path())
    if spec.keys.provider == "local":
        keyring = Path(spec.resolve_path(spec.keys.path)) if spec.keys.path else keyring
        if not keyring.exists():
            ids = sorted({k for s in spec.stages for k in s.key_ids()}) or ["pseudonym-key"]
            LocalKeyring.init(keyring, tuple(ids))
            print(f"  created dev keyring {keyring} (development only)")
    spark = get_session(spec.spark)
    data = spec.input_path(spec.stages[0])
    if not Path(data).exists():
        write_clinic_visits(data, args.rows, spark=spark)
        print(f"  generated {args.rows:,} synthetic visits in {data}")
    report = workdir / "reports" / "clinic_visits.json"
    # The DP release aggregates one month; the demo publishes the last month of the sample data. A second
    # demo run returns the same release from the ledger (same bytes, no new spend).
    context = RunContext(run_key=f"demo/{spec.name}/{uuid.uuid4().hex[:12]}", partition=args.partition)
    manifest = run_pipeline(spec, spark=spark, context=context, progress=True, report_path=report, overwrite=True)
    for s in manifest.stages:
        print(f"  {s.name}: {s.rows_in:,} rows in, {s.rows_out:,} rows out ({s.status})")
        print(f"  output: {s.output}")
        dp = s.details.get("dp")
        if dp:
            print(
                f"  privacy budget: ε={dp['budget']['epsilon']} charged to {dp['dataset']} / {dp['period']} "
                f"(ledger key {dp['ledger_key']}"
                f"{', release reused: nothing spent' if s.status == 'reused' or dp.get('reused_release') else ''})"
            )
        anon = s.details.get("anonymize")
        if anon:
            risk = anon["risk"]
            print(
                f"  anonymity: {anon['model']}; smallest class {risk['min_class_size']}, smallest l {risk['min_l']}, "
                f"{anon['suppressed_rows']} rows suppressed; levels "
                + ", ".join(f"{c} {lv}/{anon['top_levels'][c]}" for c, lv in anon["levels"].items())
            )
    print(f"  report: {report}")
    print(f"  report (HTML): {report.with_suffix('.html')}")
    return 0


def _scan_spec_text(args: argparse.Namespace, dataset: str, config: Any, sampled: int) -> str:
    """A pipeline.yaml with one ``kind: anonymize`` stage built from a scan's suggestion, to review."""
    import re

    import yaml

    stem = re.sub(r"[^A-Za-z0-9_]", "_", Path(dataset).name.split(".")[0]) or "dataset"
    stem = stem if stem[0].isalpha() else f"d_{stem}"
    stage: dict[str, Any] = {
        "name": "anonymize",
        "kind": "anonymize",
        "input": {"path": dataset, "format": args.format, **({"options": dict(args.option)} if args.option else {})},
        "output": {"path": f"{dataset.rstrip('/')}_anonymized"},
        **config.model_dump(mode="json", exclude_none=True),
    }
    spec = {"version": 1, "name": f"{stem}_anonymize"[:64], "stages": [stage]}
    header = (
        f"# Starting anonymization spec written by `privstage scan` from a sample of {sampled} rows.\n"
        "# Review every rule before use: the scan guesses from column names and value shapes.\n"
    )
    return header + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=120)


def _cmd_scan(args: argparse.Namespace) -> int:
    import datetime as dt

    from privstage.anonymize import scan, suggest_config
    from privstage.errors import SpecError
    from privstage.io import read_dataset
    from privstage.spark import get_session

    dataset = args.dataset if "://" in args.dataset else str(Path(args.dataset).resolve())
    if "://" not in dataset and not Path(dataset).exists():
        raise SpecError(f"dataset {dataset} does not exist")
    target = Path(args.write_spec) if args.write_spec else None
    if target is not None and target.exists() and not args.force:
        raise SpecError(f"{target} exists; pass --force to replace it")
    spark = get_session()
    try:
        df = read_dataset(spark, dataset, args.format, dict(args.option or ()))
        report = scan(df, sample_rows=args.sample_rows, seed=0)
    except PrivstageError:
        raise
    except Exception as exc:
        from privstage.errors import wrap_library_error

        raise wrap_library_error(exc, f"cannot scan {dataset} as {args.format} ({type(exc).__name__})") from None
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"{dataset}: {report.rows_sampled} rows sampled")
        print(f"  {'column':<24} {'type':<12} {'classified as':<15} confidence")
        for c in report.columns:
            hint = f"  (name suggests {c.name_hint})" if c.name_hint and c.name_hint != c.kind else ""
            print(f"  {c.column:<24} {c.data_type:<12} {c.kind:<15} {c.confidence:.2f}{hint}")
    if target is not None:
        try:
            config = suggest_config(
                report,
                key_id=args.key_id,
                k=args.k,
                l=args.l,
                sensitive=args.sensitive,
                max_suppression=args.max_suppression,
                reference_date=dt.date.fromisoformat(args.reference_date) if args.reference_date else None,
                identifier_columns=tuple(args.identifier or ()),
            )
        except ValueError as exc:
            raise SpecError(f"cannot suggest an anonymization spec: {exc}") from None
        assert target is not None
        target.write_text(_scan_spec_text(args, dataset, config, report.rows_sampled), encoding="utf-8")
        print(f"wrote a starting anonymize spec to {target} (review it before use)", file=sys.stderr)
    return 0


def _keyring(args: argparse.Namespace) -> Any:
    from privstage.keys import LocalKeyring, default_keyring_path

    return LocalKeyring(args.path or default_keyring_path(Path(".privstage")))


def _cmd_keys_init(args: argparse.Namespace) -> int:
    from privstage.keys import LocalKeyring, default_keyring_path

    path = Path(args.path or default_keyring_path(Path(".privstage")))
    ids = tuple(args.key or ["pseudonym-key"])
    LocalKeyring.init(path, ids)
    print(f"created dev keyring {path} (mode 0600) with keys: {', '.join(ids)}")
    return 0


def _cmd_keys_create(args: argparse.Namespace) -> int:
    key = _keyring(args).create(args.key_id)
    print(f"created key {key.key_id} version {key.version}")
    return 0


def _cmd_keys_rotate(args: argparse.Namespace) -> int:
    key = _keyring(args).rotate(args.key_id)
    print(f"key {key.key_id}: new version {key.version} (older versions stay readable)")
    return 0


def _key_provider(args: argparse.Namespace) -> tuple[Any, Any]:
    """(key provider, pipeline spec or None): the provider a ``--spec`` names, else the dev keyring ``--path``."""
    if getattr(args, "spec", None):
        from privstage.keys import provider_from_spec
        from privstage.spec import load_spec

        spec = load_spec(args.spec, base_dir=args.base_dir)
        return provider_from_spec(spec.keys, state_dir=spec.state_path(), base_dir=spec.base_dir), spec
    return _keyring(args), None


def _subject_stores(args: argparse.Namespace, keys: Any, spec: Any, dataset: str | None) -> list[Any]:
    """The per-subject key stores a command acts on: ``--subject-keys`` or those of the spec's encrypt stages."""
    from privstage.crypto.subjects import SubjectKeyStore
    from privstage.errors import SpecError
    from privstage.stages.encrypt import subject_store_path

    if args.subject_keys:
        if not args.kek_id:
            raise SpecError("--subject-keys needs --kek-id (the KEK that wraps the subject keys)")
        return [SubjectKeyStore(args.subject_keys, keys, args.kek_id)]
    if spec is None:
        raise SpecError("name the subject key store: --spec pipeline.yaml, or --subject-keys PATH --kek-id ID")
    stores = []
    for stage in spec.stages:
        config = getattr(stage, "encryption", None)
        if stage.kind != "encrypt" or getattr(config, "subject_column", None) is None:
            continue
        if dataset is None or config.dataset == dataset:
            path = subject_store_path(stage.subject_keys, config.dataset, spec)
            stores.append(SubjectKeyStore(path, keys, config.kek_id))
    if not stores:
        raise SpecError(
            f"{args.spec}: no encrypt stage with per-subject keys" + (f" for dataset '{dataset}'" if dataset else "")
        )
    return stores


def _cmd_keys_rewrap(args: argparse.Namespace) -> int:
    """Re-wrap a dataset's data keys under the KEK's current (or given) version; data files are not touched."""
    from privstage.crypto.envelope import read_manifest, rewrap, write_manifest

    keys, spec = _key_provider(args)
    directory = Path(args.dataset)
    manifest = read_manifest(directory)
    stores = _subject_stores(args, keys, spec, manifest.dataset) if manifest.subject_column else []
    new = rewrap(manifest, keys, args.version)  # checks the seal first: an edited manifest is never re-sealed
    for store in stores:
        count = store.rewrap(args.version)
        print(f"{store.describe()}: {count} subject key(s) re-wrapped")
    write_manifest(directory, new)
    version = new.seal.kek_version if new.seal else args.version
    print(
        f"dataset '{new.dataset}' ({directory}): data keys re-wrapped under '{new.kek_id}' version {version}; "
        "data files untouched"
    )
    if new.mode == "file":
        # PME keeps each file's key material in its (encrypted) footer, wrapped by the master key version of
        # the write, so that any Parquet reader with a KMS client opens the file alone (pyarrow interop).
        print(
            "  file mode: the manifest is re-sealed under the new version; each Parquet footer keeps its file keys "
            "wrapped by the version that wrote it: keep that version enabled until the dataset is rewritten"
        )
    return 0


def _cmd_keys_shred(args: argparse.Namespace) -> int:
    """Destroy one subject's data key: every copy of that subject's encrypted fields becomes unreadable."""
    keys, spec = _key_provider(args)
    stores = _subject_stores(args, keys, spec, args.dataset)
    destroyed = 0
    for store in stores:
        hit = store.shred(args.subject)
        destroyed += hit
        # The subject id is not echoed: it is the kind of identifier the store keeps only as a keyed reference.
        print(f"{store.describe()}: {'key destroyed' if hit else 'no key for this subject'}")
    print(f"subject shredded in {destroyed} of {len(stores)} store(s)")
    return 0


def _cmd_keys_list(args: argparse.Namespace) -> int:
    keyring = _keyring(args)
    for key_id, versions in keyring.list().items():
        print(f"{key_id}\tversions {', '.join(map(str, versions))}\tfingerprint {keyring.get(key_id).fingerprint()}")
    return 0


def _ledger(args: argparse.Namespace) -> Any:
    from privstage.budget import BudgetLedger, resolve_ledger_url

    return BudgetLedger(resolve_ledger_url(args.state_dir, args.ledger))


def _cmd_budget_show(args: argparse.Namespace) -> int:
    with _ledger(args) as ledger:
        budgets = ledger.budgets(dataset=args.dataset, period=args.period)
        spends = ledger.spends(dataset=args.dataset, period=args.period)
        if args.json:
            print(
                json.dumps(
                    {
                        "ledger": ledger.url,
                        "budgets": [b.to_dict() for b in budgets],
                        "spends": [s.to_dict() for s in spends],
                    },
                    indent=2,
                )
            )
            return 0
        print(f"ledger {ledger.url}")
        if not budgets and not spends:
            print("no budgets declared and no spends")
        for b in budgets:
            print(
                f"{b.dataset} / {b.period}: total (ε={b.total.epsilon}, δ={b.total.delta}), "
                f"committed (ε={b.committed.epsilon}, δ={b.committed.delta}), "
                f"reserved (ε={b.reserved.epsilon}, δ={b.reserved.delta}), "
                f"remaining (ε={b.remaining.epsilon}, δ={b.remaining.delta})"
            )
            for s in spends:
                if (s.key.dataset, s.key.period) == (b.dataset, b.period):
                    print(f"    {s.state:<9} ε={s.budget.epsilon} δ={s.budget.delta}  {s.key}")
    return 0


def _cmd_budget_abandon(args: argparse.Namespace) -> int:
    from privstage.budget import LedgerKey

    with _ledger(args) as ledger:
        freed = ledger.abandon(LedgerKey.parse(args.ledger_key))
    print(f"{args.ledger_key}: {'reservation released' if freed else 'no live reservation (committed spends stay)'}")
    return 0


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="privstage", description="Guarded privacy stages for Spark pipelines.")
    parser.add_argument("--version", action="version", version=f"privstage {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def spec_command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("spec", help="pipeline.yaml")
        p.add_argument("--base-dir", help="resolve relative paths against this folder (default: the spec's folder)")
        p.add_argument("--stage", action="append", help="only this stage (repeatable)")
        p.add_argument("--overwrite", action="store_true", default=None, help="replace existing outputs atomically")
        p.add_argument(
            "--partition",
            help="the run's data partition (a date such as 2026-03 or 2026-03-01): DP stages aggregate it and "
            "charge the budget period it falls in",
        )
        p.add_argument(
            "--ledger",
            help="privacy-budget ledger URL (default $PRIVSTAGE_LEDGER_URL, the file named by "
            "$PRIVSTAGE_LEDGER_URL_FILE, or <state_dir>/ledger.db)",
        )
        return p

    spec_command("validate", "check a pipeline without reading data").set_defaults(func=_cmd_validate)
    p = spec_command("plan", "show what a run would do (stages, keys, guards)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_plan)
    p = spec_command("run", "run a pipeline")
    p.add_argument("--report", help="write the JSON run report here (and an HTML page beside it)")
    p.add_argument("--no-progress", action="store_true", help="no per-stage progress on stderr")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("demo", help="run the clinic_visits pipeline on generated data and a dev keyring")
    p.add_argument("--workdir", default="demo-output", help="where data, keys, output and report go")
    p.add_argument("--rows", type=int, default=DEMO_ROWS)
    p.add_argument("--spec", help="another pipeline.yaml to run instead")
    p.add_argument(
        "--partition",
        default=DEMO_PARTITION,
        help=f"the month the DP release aggregates (default {DEMO_PARTITION}, the last month of the sample data)",
    )
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "scan", help="classify the columns of a dataset (PII kinds and confidence; never prints a value)"
    )
    p.add_argument("dataset", help="dataset path (Parquet by default)")
    p.add_argument("--format", choices=("parquet", "csv", "json"), default="parquet")
    p.add_argument(
        "--option", action="append", type=_key_value, metavar="KEY=VALUE", help="reader option (csv: header=true)"
    )
    p.add_argument("--sample-rows", type=int, default=10_000, help="rows sampled (default 10000)")
    p.add_argument("--json", action="store_true", help="the classification as JSON (shares and confidences)")
    p.add_argument("--write-spec", metavar="FILE", help="write a pipeline.yaml with a starting anonymize stage")
    p.add_argument("--force", action="store_true", help="replace an existing --write-spec file")
    p.add_argument("--k", type=int, default=5, help="k of the written spec (default 5)")
    p.add_argument("--l", type=int, default=None, help="l of the written spec (needs --sensitive)")
    p.add_argument("--sensitive", help="the sensitive column of l-diversity")
    p.add_argument("--max-suppression", type=float, default=0.02, help="share of rows that may be suppressed")
    p.add_argument("--key-id", default="pseudonym-key", help="key id of pseudonym rules (default pseudonym-key)")
    p.add_argument("--identifier", action="append", help="a column to pseudonymize (repeatable)")
    p.add_argument("--reference-date", help="age bands are ages at this date (YYYY-MM-DD; default today)")
    p.set_defaults(func=_cmd_scan)

    keys = sub.add_parser("keys", help="manage the local development keyring").add_subparsers(
        dest="keys_command", required=True
    )
    k = keys.add_parser("init", help="create a dev keyring (0600) with random 256-bit keys")
    k.add_argument("--path", help="keyring file (default $PRIVSTAGE_KEYRING or .privstage/dev-keyring.json)")
    k.add_argument("--key", action="append", help="key id to create (repeatable; default pseudonym-key)")
    k.set_defaults(func=_cmd_keys_init)
    for name, func, help_text in (
        ("create", _cmd_keys_create, "add a key"),
        ("rotate", _cmd_keys_rotate, "add a new version of a key"),
    ):
        k = keys.add_parser(name, help=help_text)
        k.add_argument("key_id")
        k.add_argument("--path")
        k.set_defaults(func=func)
    budget = sub.add_parser("budget", help="the privacy-budget ledger").add_subparsers(
        dest="budget_command", required=True
    )
    for name, func, help_text in (
        ("show", _cmd_budget_show, "declared budgets and spends per dataset and period"),
        ("abandon", _cmd_budget_abandon, "free the reservation of a run that will not be retried"),
    ):
        b = budget.add_parser(name, help=help_text)
        b.add_argument(
            "--ledger",
            help="ledger URL (default $PRIVSTAGE_LEDGER_URL, the file named by $PRIVSTAGE_LEDGER_URL_FILE, "
            "or <state-dir>/ledger.db)",
        )
        b.add_argument("--state-dir", default=".privstage", help="where the embedded SQLite ledger lives")
        if name == "show":
            b.add_argument("--dataset")
            b.add_argument("--period")
            b.add_argument("--json", action="store_true")
        else:
            b.add_argument("ledger_key", help="the ledger key as 'budget show' prints it")
        b.set_defaults(func=func)

    k = keys.add_parser("rewrap", help="re-wrap an encrypted dataset's data keys under the KEK's new version")
    k.add_argument("dataset", help="the encrypted dataset's directory (it holds the encryption manifest)")
    k.add_argument("--version", type=int, help="KEK version to wrap under (default: the current one)")
    k.set_defaults(func=_cmd_keys_rewrap)
    rewrap_parser = k
    k = keys.add_parser("shred", help="destroy one subject's key (crypto-shredding)")
    k.add_argument("--subject", required=True, help="the subject id (the value of the encrypt stage's subject_column)")
    k.add_argument("--dataset", help="only this dataset's store (default: every store the spec names)")
    k.set_defaults(func=_cmd_keys_shred)
    for p in (rewrap_parser, k):
        p.add_argument("--spec", help="pipeline.yaml: its key provider and its encrypt stages' subject key stores")
        p.add_argument("--base-dir", help="resolve the spec's relative paths against this folder")
        p.add_argument("--path", help="dev keyring file when no --spec is given")
        p.add_argument("--subject-keys", help="a subject key store file (instead of the spec's)")
        p.add_argument("--kek-id", help="the KEK of --subject-keys")

    k = keys.add_parser("list", help="key ids, versions and fingerprints (never key material)")
    k.add_argument("--path")
    k.set_defaults(func=_cmd_keys_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``privstage`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PrivstageError as exc:
        _err(f"{type(exc).__name__}: {exc}")
        return exit_code_for(exc)
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except Exception as exc:
        if os.environ.get("PRIVSTAGE_DEBUG") == "1":
            raise
        _err(f"unexpected {type(exc).__name__} (set PRIVSTAGE_DEBUG=1 for the traceback)")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

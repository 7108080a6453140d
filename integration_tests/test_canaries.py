"""Canaries: a planted key and a planted raw SSN never appear in logs, reports, manifests,
guard results, ``explain()`` output or Spark's event log.

(Airflow's XCom table and task logs, and Dagster's event log, are checked in test_airflow.py and
test_dagster.py with the same helpers.)
"""

from __future__ import annotations

import io
import json
import logging
from contextlib import redirect_stdout

from canary import files_text, leaks, secret_forms, text_forms

from privstage.engine import run_pipeline
from privstage.stages import pseudonymize as ps
from testsupport import CANARY_SSN, PSEUDO_STAGE

GUARDED = PSEUDO_STAGE.replace(
    "    columns:",
    """\
    expect_before:
      - {type: expect_column_values_to_not_be_null, kwargs: {column: ssn}}
      - {type: expect_column_values_to_match_regex, kwargs: {column: ssn, regex: '^9'}, blocking: false}
      - {type: expect_column_values_to_be_in_set, kwargs: {column: name, value_set: [nobody]}, blocking: false}
    expect_after:
      - {type: expect_column_values_to_match_regex, kwargs: {column: ssn, regex: '^[0-9a-f]{64}$'}}
      - {type: expect_column_values_to_be_unique, kwargs: {column: patient_id}, blocking: false}
    columns:""",
)


def test_no_key_and_no_raw_ssn_anywhere(workspace, spark, spark_event_log_dir, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    key = workspace.key()
    needles = secret_forms(key) + text_forms(CANARY_SSN)
    spec = workspace.load(GUARDED)
    report = workspace.root / "reports" / "run.json"
    # The event log is shared by the whole test session, and other tests' own queries may hold the
    # canary as a literal: scan only what this run appends.
    spark.range(1).count()
    event_log_before = "".join(text for _, text in files_text(spark_event_log_dir))

    manifest = run_pipeline(spec, spark=spark, report_path=report, progress=True)

    # the non-blocking expectations failed on the sensitive columns, and said so without values
    outcomes = [o for g in manifest.stages[0].guards for o in g.outcomes]
    failed = {(o.check, o.column) for o in outcomes if not o.success}
    assert ("expect_column_values_to_match_regex", "ssn") in failed
    assert ("expect_column_values_to_be_in_set", "name") in failed

    # explain() of the stage's DataFrame, in every mode
    plan = ps.plan(spec.stages[0], workspace.read("data/visits").schema, workspace.keyring)
    df = ps.apply(workspace.read("data/visits"), plan, spark=spark)
    explained = io.StringIO()
    with redirect_stdout(explained):
        for mode in ("simple", "extended", "codegen", "cost", "formatted"):
            df.explain(mode=mode)
    haystacks = [
        ("explain()", explained.getvalue()),
        ("manifest", json.dumps(manifest.to_dict())),
        ("log records", caplog.text),
    ]
    captured = capfd.readouterr()
    haystacks += [("stdout", captured.out), ("stderr", captured.err)]
    haystacks += list(files_text(report.parent))
    haystacks += [("committed manifest", (workspace.root / "out/visits/_privstage_manifest.json").read_text())]
    spark.range(1).count()  # a job end flushes the event log
    event_log = "".join(text for _, text in files_text(spark_event_log_dir))
    assert event_log.startswith(event_log_before), "the event log only grows"
    event_log = event_log[len(event_log_before) :]
    assert "SparkListenerSQLExecutionStart" in event_log, "the Spark event log is enabled for the test session"
    haystacks += [("Spark event log", event_log)]

    assert leaks(haystacks, needles) == []
    # positive control: a literal that does enter a plan is found by the same scan
    marker = "positive-control-7f3a9c"
    spark.range(1).selectExpr(f"'{marker}' AS m").collect()
    assert leaks(files_text(spark_event_log_dir), [marker]) != []
    # the canaries are real: they are in the input and the keyring
    assert workspace.read("data/visits").where(f"ssn = '{CANARY_SSN}'").count() == 2


ENCRYPTION_STAGES = """\
  - name: encrypt_field
    kind: encrypt
    input: {path: data/visits}
    output: {path: enc/field}
    encryption: {mode: field, dataset: tiny_field, kek_id: visits-kek, columns: [ssn, name, email],
                 row_key: visit_id, subject_column: patient_id}
  - name: decrypt_field
    kind: decrypt
    mode: field
    input: {stage: encrypt_field}
    output: {path: clear/field}
  - name: encrypt_file
    kind: encrypt
    input: {path: data/visits}
    output: {path: enc/file}
    encryption: {mode: file, dataset: tiny_file, kek_id: visits-kek, columns: [ssn, name, email]}
  - name: decrypt_file
    kind: decrypt
    mode: file
    input: {stage: encrypt_file}
    output: {path: clear/file}
"""


def test_no_kek_and_no_dek_anywhere_in_both_encryption_modes(workspace, spark, spark_event_log_dir, caplog, capfd):
    """KEKs (and the keys derived from them) and DEKs never reach logs, the run report, manifests, explain(),
    Spark's environment data (the UI's Environment tab: the status store) or the event log; the raw SSN never
    reaches an encrypted file."""
    from privstage.crypto.subjects import SubjectKeyStore
    from privstage.engine import PlanEnv
    from privstage.stages import encrypt as enc

    caplog.set_level(logging.DEBUG)
    kek = workspace.keyring.create("visits-kek")
    spec = workspace.load(ENCRYPTION_STAGES)
    report = workspace.root / "reports" / "run.json"
    spark.range(1).count()
    event_log_before = "".join(text for _, text in files_text(spark_event_log_dir))

    manifest = run_pipeline(spec, spark=spark, report_path=report, progress=True)
    assert [s.status for s in manifest.stages] == ["succeeded"] * 4
    # decrypt_field was planned before encrypt_field wrote its manifest: types came from the schema metadata
    original = sorted(tuple(r) for r in workspace.read("data/visits").collect())
    for mode in ("field", "file"):
        assert sorted(tuple(r) for r in workspace.read(f"clear/{mode}").collect()) == original

    store = SubjectKeyStore(
        workspace.root / ".privstage" / "subject-keys" / "tiny_field.json", workspace.keyring, kek.key_id
    )
    patients = [r[0] for r in workspace.read("data/visits").select("patient_id").distinct().collect()]
    deks = list(store.lookup(patients).values())
    assert len(deks) == len(patients) == 4
    derived = [kek.derive(p) for p in ("pme/master", "envelope/wrap", "manifest/seal", "subjects/ref")]
    needles = [form for secret in [kek.material(), *derived, *deks] for form in secret_forms(secret)]

    # explain() of the field stage's frame (its data keys travel in a broadcast relation), in every mode
    env = PlanEnv(spec, run_key=None, partition=None)
    plan = enc.plan(spec.stage("encrypt_field"), workspace.read("data/visits").schema, workspace.keyring, env=env)
    frame = enc.apply(workspace.read("data/visits"), plan, spark=spark)
    explained = io.StringIO()
    with redirect_stdout(explained):
        for mode in ("simple", "extended", "codegen", "cost", "formatted"):
            frame.explain(mode=mode)
    info = spark.sparkContext._jsc.sc().statusStore().environmentInfo()  # what the UI's Environment tab shows
    parts = ("runtime", "sparkProperties", "hadoopProperties", "systemProperties", "metricsProperties")
    environment = "\n".join(str(getattr(info, part)()) for part in parts)
    assert "spark.master" in environment and "java.version" in environment  # the Environment tab's data
    haystacks = [
        ("explain()", explained.getvalue()),
        ("Spark environment (UI)", environment),
        ("Spark conf", json.dumps(sorted(spark.sparkContext.getConf().getAll()))),
        ("manifest", json.dumps(manifest.to_dict())),
        ("log records", caplog.text),
    ]
    captured = capfd.readouterr()
    haystacks += [("stdout", captured.out), ("stderr", captured.err)]
    haystacks += list(files_text(report.parent))
    for stage in ("enc/field", "enc/file"):
        haystacks += [
            (f"{stage} manifests", "".join(t for p, t in files_text(workspace.root / stage) if "_privstage" in p))
        ]
    spark.range(1).count()
    event_log = "".join(text for _, text in files_text(spark_event_log_dir))[len(event_log_before) :]
    assert "SparkListenerSQLExecutionStart" in event_log
    haystacks += [("Spark event log", event_log)]
    assert "SparkListenerEnvironmentUpdate" in event_log_before or "SparkListenerEnvironmentUpdate" in event_log

    assert leaks(haystacks, needles) == []
    # the raw SSN is in neither encrypted dataset's files (values and, in file mode, column names hidden)
    encrypted_bytes = [
        (str(p), p.read_bytes().decode("latin-1"))
        for s in ("enc/field", "enc/file")
        for p in (workspace.root / s).glob("part-*")
    ]
    assert leaks(encrypted_bytes, text_forms(CANARY_SSN)) == []
    # positive control: the needles are found where they are (the key directory the run used is gone, so
    # check the keyring file itself holds the KEK in one of the scanned forms)
    assert leaks([("keyring", workspace.keyring_path.read_text())], needles) != []

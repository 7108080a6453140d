"""The pipeline spec: parsing, strictness, error messages that point at the YAML, key-id hygiene."""

from __future__ import annotations

import base64
import hashlib
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from privstage.budget import PrivacyBudget
from privstage.errors import SpecError
from privstage.spec import (
    AnonymizeStage,
    DPAggregateStage,
    LocalKeyringSpec,
    PipelineSpec,
    PseudonymizeStage,
    load_spec,
    parse_spec,
    validate_key_id,
)

REPO = Path(__file__).resolve().parents[1]
CLINIC = REPO / "pipelines" / "clinic_visits" / "pipeline.yaml"

# Line numbers matter: the unknown-key cases below insert a line after a given line of this text.
BASE = """\
version: 1
name: tiny
keys:
  provider: local
  path: keyring.json
stages:
  - name: pseudo
    kind: pseudonymize
    input:
      path: data/visits
    output:
      path: out/visits
    columns:
      - column: patient_id
        key_id: pseudonym-key
      - column: ssn
        key_id: pseudonym-key
"""

STAGE_TWO = """\
  - name: second
    kind: pseudonymize
    input:
      stage: pseudo
    output:
      path: out/second
    columns:
      - column: email
        key_id: pseudonym-key
"""


def parse(text: str, **kw: object) -> PipelineSpec:
    kw.setdefault("env", {})
    return parse_spec(text, **kw)  # type: ignore[arg-type]


def insert_after(text: str, line_no: int, new_line: str) -> str:
    lines = text.splitlines(keepends=True)
    lines.insert(line_no, new_line + "\n")
    return "".join(lines)


def spec_error(text: str, **kw: object) -> str:
    with pytest.raises(SpecError) as info:
        parse(text, **kw)
    return str(info.value)


# --------------------------------------------------------------------------------------------
# The flagship example
# --------------------------------------------------------------------------------------------
def test_clinic_visits_example_parses(tmp_path: Path) -> None:
    spec = load_spec(CLINIC, base_dir=tmp_path, env={})

    assert spec.name == "clinic_visits"
    assert isinstance(spec.keys, LocalKeyringSpec)
    stage, dp, research, encrypted = spec.stages
    assert (encrypted.kind, encrypted.encryption.mode, encrypted.encryption.subject_column) == (
        "encrypt",
        "field",
        "patient_id",
    )
    assert encrypted.key_ids() == {"visits-kek"}
    assert isinstance(stage, PseudonymizeStage)
    assert stage.name == "pseudonymize_visits"
    assert [c.column for c in stage.columns] == ["patient_id", "ssn", "email", "name"]
    assert stage.key_ids() == {"pseudonym-key"}
    name_col = stage.columns[3]
    assert (name_col.bits, name_col.encoding, name_col.output_column, name_col.case_fold) == (
        128,
        "base64url",
        "name_pseudonym",
        True,
    )
    assert {"name", "email", "ssn", "patient_id"} <= stage.input_sensitive_columns()
    assert all(e.blocking for e in stage.expect_before + stage.expect_after)
    assert spec.input_path(stage) == str(tmp_path.resolve() / "data" / "visits")
    assert spec.resolve_path(stage.output.path) == str(tmp_path.resolve() / "output" / "visits_pseudonymized")

    # The monthly DP release: per diagnosis and ZIP3, over the pseudonymized visits, a yearly budget.
    assert isinstance(dp, DPAggregateStage)
    assert (dp.input.stage, dp.privacy_unit, dp.group_by) == (
        "pseudonymize_visits",
        "patient_id",
        ("diagnosis_code", "zip3"),
    )
    assert dp.groups is not None and dp.groups.public is not None
    assert len(dp.groups.public["diagnosis_code"]) == 40 and len(dp.groups.public["zip3"]) == 327
    assert [(q.name, q.type) for q in dp.queries] == [("visits", "count"), ("mean_cost", "mean")]
    assert dp.total_budget() == PrivacyBudget("0.5") and dp.budget.total.budget == PrivacyBudget(6, "1e-6")
    assert dp.budget.period == "{year}" and dp.partition is not None and dp.partition.granularity == "month"

    # The research release: k >= 5, l >= 2 on the diagnosis, over the pseudonymized visits; nothing else released.
    assert isinstance(research, AnonymizeStage)
    assert (research.input.stage, research.k, research.l, research.sensitive) == (
        "pseudonymize_visits",
        5,
        2,
        "diagnosis_code",
    )
    assert [r.output_column for r in research.quasi_identifiers] == ["age_band", "zip3", None, "visit_month"]
    assert research.unlisted == "error"


# --------------------------------------------------------------------------------------------
# Frozen models
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("target", "field", "value"),
    [
        (lambda s: s, "name", "other"),
        (lambda s: s, "base_dir", "/elsewhere"),
        (lambda s: s.keys, "path", "/srv/other.json"),
        (lambda s: s.stages[0], "name", "renamed"),
        (lambda s: s.stages[0].output, "mode", "overwrite"),
        (lambda s: s.stages[0].columns[0], "key_id", "other-key"),
        (lambda s: s.stages[0].columns[0], "bits", 128),
    ],
)
def test_models_are_frozen(target, field: str, value: object) -> None:
    spec = parse(BASE)
    obj = target(spec)
    before = getattr(obj, field)
    with pytest.raises(ValidationError, match="frozen"):
        setattr(obj, field, value)
    assert getattr(obj, field) == before


def test_collections_are_tuples() -> None:
    spec = parse(BASE)
    assert isinstance(spec.stages, tuple)
    assert isinstance(spec.stages[0].columns, tuple)


# --------------------------------------------------------------------------------------------
# Unknown keys, unknown kinds: the message names the YAML path and line
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("after_line", "new_line", "yaml_path", "line"),
    [
        (2, "nmae: typo", "nmae", 3),
        (5, "  paht: elsewhere.json", "keys.paht", 6),
        (8, "    knd: pseudonymize", "stages[0].knd", 9),
        (10, "      fromat: csv", "stages[0].input.fromat", 11),
        (12, "      mdoe: overwrite", "stages[0].output.mdoe", 13),
        (17, "        colum: ssn2", "stages[0].columns[1].colum", 18),
        (2, "spark: {mastr: 'local[2]'}", "spark.mastr", 3),
    ],
)
def test_unknown_key_names_yaml_path_and_line(after_line: int, new_line: str, yaml_path: str, line: int) -> None:
    message = spec_error(insert_after(BASE, after_line, new_line))
    assert f"{yaml_path} (line {line}): unknown key" in message


def test_unknown_key_in_an_expectation() -> None:
    text = insert_after(BASE, 12, "    expect_before:\n      - {type: expect_column_to_exist, kwarg: {column: a}}")
    assert "stages[0].expect_before[0].kwarg (line 14): unknown key" in spec_error(text)


def test_unknown_stage_kind_names_the_known_kinds() -> None:
    message = spec_error(BASE.replace("kind: pseudonymize", "kind: anonymise"))
    assert "stages[0] (line 7)" in message
    assert "unknown stage kind 'anonymise'" in message
    assert "pseudonymize" in message
    # pydantic's follow-on "tuple too short" complaint is noise and is dropped
    assert "at least 1 item" not in message


def test_unknown_key_provider_names_the_known_providers() -> None:
    message = spec_error(BASE.replace("provider: local", "provider: vault"))
    assert "keys (line 3): unknown key provider 'vault'" in message
    for known in ("local", "files", "env"):
        assert known in message


def test_every_problem_is_reported_at_once() -> None:
    text = insert_after(insert_after(BASE, 17, "        colum: x"), 2, "nmae: typo")
    message = spec_error(text)
    assert "nmae (line 3)" in message
    assert "stages[0].columns[1].colum (line 19)" in message


# --------------------------------------------------------------------------------------------
# Malformed and non-mapping YAML
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("name: tiny\n  stages: []\n", 2),  # bad indentation
        ("name: tiny\nstages:\n\t- name: x\n", 3),  # a tab
        ("name: tiny\nstages: [\n  {name: x\n", 4),  # unclosed flow collection
        ("name: tiny\nname: 'open\n", 3),  # unterminated quote
    ],
    ids=["indentation", "tab", "unclosed-bracket", "unterminated-quote"],
)
def test_malformed_yaml_is_a_spec_error_with_line(text: str, line: int) -> None:
    message = spec_error(text, source="pipeline.yaml")
    assert message.startswith("pipeline.yaml: malformed YAML")
    assert f"line {line}" in message


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a\n- b\n", "just text\n", "42\n", "null\n"])
def test_non_mapping_yaml_is_a_spec_error(text: str) -> None:
    assert "YAML mapping" in spec_error(text)


def test_more_than_one_document_is_a_spec_error() -> None:
    assert "malformed YAML" in spec_error(BASE + "---\n" + BASE)


# --------------------------------------------------------------------------------------------
# Keys are referenced by id only
# --------------------------------------------------------------------------------------------
PASTED_MATERIAL = "c2VjcmV0LWtleS1tYXRlcmlhbC10aGF0LW11c3Qtbm90LWxlYWs="


@pytest.mark.parametrize(
    ("after_line", "new_line", "yaml_path"),
    [
        (15, f"        key: {PASTED_MATERIAL}", "stages[0].columns[0]"),
        (15, f"        hmac_key: {PASTED_MATERIAL}", "stages[0].columns[0]"),
        (8, f"    secret: {PASTED_MATERIAL}", "stages[0]"),
        (8, f"    key_material: {PASTED_MATERIAL}", "stages[0]"),
        (5, f"  password: {PASTED_MATERIAL}", "keys"),
        (2, f"Key: {PASTED_MATERIAL}", "<root>"),
    ],
)
def test_inline_key_material_is_refused(after_line: int, new_line: str, yaml_path: str) -> None:
    message = spec_error(insert_after(BASE, after_line, new_line))
    assert f"{yaml_path}" in message
    assert "inline key material" in message
    assert "key_id" in message
    assert PASTED_MATERIAL not in message


def _random_keys(n: int) -> list[bytes]:
    """n random-looking 32-byte keys, the same on every run (SHA-256 of a counter)."""
    return [hashlib.sha256(b"privstage-test-key-%d" % i).digest() for i in range(n)]


def _encodings(raw: bytes) -> list[str]:
    std = base64.b64encode(raw).decode()
    url = base64.urlsafe_b64encode(raw).decode()
    return [raw.hex(), raw.hex().upper(), std, std.rstrip("="), url, url.rstrip("=")]


def test_random_32_byte_keys_are_not_accepted_as_key_ids() -> None:
    # The way people make keys: hex, base64 and url-safe base64 (secrets.token_urlsafe), padded or not.
    accepted = []
    for raw in _random_keys(3000):
        for text in _encodings(raw):
            try:
                validate_key_id(text)
            except ValueError:
                continue
            accepted.append(text)
    assert accepted == []


@pytest.mark.parametrize("material", ["0123456789abcdef" * 4, "00" * 32, "A1" * 16, _encodings(_random_keys(1)[0])[5]])
def test_key_material_as_key_id_is_a_spec_error(material: str) -> None:
    message = spec_error(BASE.replace("key_id: pseudonym-key", f"key_id: '{material}'", 1))
    assert "stages[0].columns[0].key_id (line 15)" in message
    assert "looks like key material" in message
    assert material not in message


@pytest.mark.parametrize(
    "key_id",
    [
        "pseudonym-key",
        "tenant.a_key-2",
        "k1",
        "K",
        "2024-keys",
        "pseudonym_key.v12b",
        "customer-pseudonym-key-for-analytics-2024",
        "TENANT_A_PSEUDONYM_KEY",
        "tenantKeyA-production-2024",
        "projects-my-project-locations-global-keyRings-ring-cryptoKeys-k1",
        "f47ac10b-58cc-4372-a567-0e02b2c3d479",  # a UUID, as KMS key ids are
        "k" * 64,
    ],
)
def test_ordinary_key_ids_pass(key_id: str) -> None:
    assert validate_key_id(key_id) == key_id
    spec = parse(BASE.replace("key_id: pseudonym-key", f"key_id: '{key_id}'", 1))
    assert spec.stages[0].columns[0].key_id == key_id


@pytest.mark.parametrize(
    "key_id",
    ["", "-leading-dash", ".hidden", "has space", "a" * 65, "k/1", "k:1", "ключ", "k1\n", "k=1", 42, None],
)
def test_key_ids_outside_the_pattern_are_rejected(key_id: object) -> None:
    with pytest.raises(ValueError, match="key id is 1-64 characters"):
        validate_key_id(key_id)  # type: ignore[arg-type]


@pytest.mark.parametrize("key_id", ["k1.v2", "tenant-key_V3", "pseudonym-key-v1", "TENANT_A_KEY_V2"])
def test_key_ids_ending_in_a_version_suffix_are_rejected(key_id: str) -> None:
    # 'x-v2' would be the same environment variable (and 'x.v2' the same file) as version 2 of 'x'
    with pytest.raises(ValueError, match="version suffix"):
        validate_key_id(key_id)


KEY_ID_ALPHABET = string.ascii_letters + string.digits + "._-"


@given(st.text(alphabet=KEY_ID_ALPHABET, max_size=80))
def test_key_id_from_the_alphabet_is_accepted_or_value_error(key_id: str) -> None:
    try:
        assert validate_key_id(key_id) == key_id
    except ValueError:
        pass


@given(
    st.text(alphabet=KEY_ID_ALPHABET, max_size=30),
    st.characters(exclude_characters=KEY_ID_ALPHABET),
    st.text(alphabet=KEY_ID_ALPHABET, max_size=30),
)
def test_key_id_with_a_character_outside_the_alphabet_is_rejected(head: str, bad: str, tail: str) -> None:
    with pytest.raises(ValueError):
        validate_key_id(head + bad + tail)


# --------------------------------------------------------------------------------------------
# ${VAR} interpolation
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${OUT}", {"OUT": "out/from-env"}, "out/from-env"),
        ("${OUT:-out/default}", {}, "out/default"),
        ("${OUT:-out/default}", {"OUT": "out/set"}, "out/set"),
        ("${ROOT}/visits-${RUN:-dev}", {"ROOT": "/data"}, "/data/visits-dev"),
        ("plain/path", {"OUT": "ignored"}, "plain/path"),
    ],
)
def test_env_interpolation(value: str, env: dict[str, str], expected: str) -> None:
    spec = parse(BASE.replace("path: out/visits", f"path: '{value}'"), env=env)
    assert spec.stages[0].output.path == expected


def test_interpolated_value_is_validated_like_a_literal() -> None:
    text = insert_after(BASE, 15, "        bits: ${BITS}")
    assert parse(text, env={"BITS": "128"}).stages[0].columns[0].bits == 128
    assert "stages[0].columns[0].bits" in spec_error(text, env={"BITS": "100"})


def test_missing_variable_names_variable_and_yaml_path() -> None:
    message = spec_error(BASE.replace("path: out/visits", "path: ${PRIVSTAGE_TEST_UNSET}/visits"), env={})
    assert "${PRIVSTAGE_TEST_UNSET}" in message
    assert "stages[0].output.path" in message
    assert "no default" in message


def test_interpolation_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIVSTAGE_TEST_OUT", "out/env")
    text = BASE.replace("path: out/visits", "path: ${PRIVSTAGE_TEST_OUT}")
    assert parse_spec(text).stages[0].output.path == "out/env"


# --------------------------------------------------------------------------------------------
# Field rules
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bits", "ok"),
    [
        (128, True),
        (136, True),
        (192, True),
        (256, True),
        (120, False),
        (264, False),
        (130, False),
        (0, False),
        (-8, False),
    ],
)
def test_bits_between_128_and_256_in_steps_of_8(bits: int, ok: bool) -> None:
    text = insert_after(BASE, 15, f"        bits: {bits}")
    if ok:
        assert parse(text).stages[0].columns[0].bits == bits
    else:
        assert "stages[0].columns[0].bits (line 16)" in spec_error(text)


def test_duplicate_columns_are_refused() -> None:
    text = BASE.replace("column: ssn", "column: patient_id")
    message = spec_error(text)
    assert "stages[0] (line 7)" in message
    assert "listed twice" in message


def test_two_columns_with_the_same_output_name_are_refused() -> None:
    text = insert_after(BASE, 15, "        output_column: ssn")
    assert "same output name" in spec_error(text)


def test_duplicate_stage_names_are_refused() -> None:
    text = BASE + STAGE_TWO.replace("name: second", "name: pseudo")
    message = spec_error(text)
    assert "stages[1]" in message
    assert "'pseudo' is used twice" in message


def test_two_stages_writing_the_same_output_are_refused() -> None:
    text = BASE + STAGE_TWO.replace("path: out/second", "path: out/visits")
    assert "also written by 'pseudo'" in spec_error(text)


def test_input_stage_reads_an_earlier_stage(tmp_path: Path) -> None:
    spec = parse(BASE + STAGE_TWO, base_dir=tmp_path)
    second = spec.stage("second")
    assert spec.input_path(second) == str(tmp_path.resolve() / "out" / "visits")
    assert spec.input_format(second) == "parquet"


@pytest.mark.parametrize("reference", ["second", "nowhere"], ids=["later-stage", "unknown-stage"])
def test_input_stage_must_be_an_earlier_stage(reference: str) -> None:
    first = BASE.replace("      path: data/visits", f"      stage: {reference}")
    text = first + STAGE_TWO.replace("      stage: pseudo", "      path: data/other")
    message = spec_error(text)
    assert f"input.stage '{reference}' is not an earlier stage" in message
    assert "stages[0] (pseudo)" in message


@pytest.mark.parametrize(
    "input_yaml",
    ["      path: data/visits\n      stage: pseudo", "      format: csv"],
    ids=["both", "neither"],
)
def test_input_needs_exactly_one_of_path_or_stage(input_yaml: str) -> None:
    text = BASE.replace("      path: data/visits", input_yaml)
    message = spec_error(text)
    assert "stages[0].input (line 9)" in message
    assert "exactly one of 'path' or 'stage'" in message


def test_stage_lookup_names_the_stages() -> None:
    spec = parse(BASE + STAGE_TWO)
    assert spec.stage("second").name == "second"
    with pytest.raises(SpecError, match=r"no stage named 'third' \(stages: pseudo, second\)"):
        spec.stage("third")


@pytest.mark.parametrize(
    ("old", "new", "yaml_path"),
    [
        ("version: 1", "version: 2", "version (line 1)"),
        ("name: tiny", "name: 1bad-name", "name (line 2)"),
        ("  - name: pseudo", "  - name: bad-name", "stages[0].name (line 7)"),
        ("      path: data/visits", "      path: data/visits\n      format: avro", "stages[0].input.format (line 11)"),
        ("      path: out/visits", "      path: out/visits\n      mode: append", "stages[0].output.mode (line 13)"),
        ("    columns:\n", "    columns: []\n", "stages[0].columns (line 13)"),
    ],
)
def test_wrong_values_name_their_path(old: str, new: str, yaml_path: str) -> None:
    assert old in BASE
    text = BASE.replace(old, new, 1)
    if new.endswith("[]\n"):
        text = text.split("    columns: []\n")[0] + "    columns: []\n"
    assert yaml_path in spec_error(text)


# --------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("data/visits", "{base}/data/visits"),
        ("./data/../data/visits", "{base}/data/visits"),
        ("../sibling", "{parent}/sibling"),
        ("/abs/visits", "/abs/visits"),
        ("s3://bucket/visits", "s3://bucket/visits"),
        ("s3a://bucket/a/../b", "s3a://bucket/a/../b"),
        ("file:///tmp/visits", "file:///tmp/visits"),
        ("hdfs://namenode:8020/visits", "hdfs://namenode:8020/visits"),
    ],
)
def test_resolve_path(tmp_path: Path, path: str, expected: str) -> None:
    base = tmp_path.resolve() / "project"
    spec = parse(BASE, base_dir=base)
    assert spec.resolve_path(path) == expected.format(base=base, parent=base.parent)


def test_relative_base_dir_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = parse(BASE, base_dir="project")
    assert spec.base_dir == str(tmp_path.resolve() / "project")
    assert spec.state_path() == tmp_path.resolve() / "project" / ".privstage"


def test_load_spec_base_dir_defaults_to_the_files_folder(tmp_path: Path) -> None:
    folder = tmp_path / "pipelines" / "tiny"
    folder.mkdir(parents=True)
    (folder / "pipeline.yaml").write_text(BASE, encoding="utf-8")
    spec = load_spec(folder / "pipeline.yaml", env={})
    assert spec.base_dir == str(folder.resolve())
    assert spec.input_path(spec.stages[0]) == str(folder.resolve() / "data" / "visits")


def test_privstage_base_dir_overrides_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pipeline.yaml").write_text(BASE, encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    assert load_spec(tmp_path / "pipeline.yaml", env={"PRIVSTAGE_BASE_DIR": str(elsewhere)}).base_dir == str(elsewhere)
    monkeypatch.setenv("PRIVSTAGE_BASE_DIR", str(elsewhere))
    assert load_spec(tmp_path / "pipeline.yaml").base_dir == str(elsewhere)
    # an explicit argument beats the environment
    explicit = tmp_path / "explicit"
    assert load_spec(tmp_path / "pipeline.yaml", base_dir=explicit).base_dir == str(explicit)


def test_load_spec_of_a_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read pipeline spec"):
        load_spec(tmp_path / "missing.yaml", env={})


def test_load_spec_names_the_file_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(insert_after(BASE, 2, "nmae: typo"), encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path, env={})
    assert str(path) in str(info.value)
    assert info.value.retryable is False

"""The pseudonymize stage against an independent reference (Python's hmac + unicodedata)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import unicodedata

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privstage.errors import KeyUnavailable, SpecError
from privstage.keys import EnvKeyProvider
from privstage.spec import PseudonymizeStage
from privstage.stages import pseudonymize as ps

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))
PROVIDER = EnvKeyProvider(
    environ={
        "PRIVSTAGE_KEY_KEY_A": base64.b64encode(KEY_A).decode(),
        "PRIVSTAGE_KEY_KEY_B": base64.b64encode(KEY_B).decode(),
    }
)

TRICKY = [
    "alice",
    "  padded\t",
    "Cafe\u0301",  # NFD: must equal the NFC form
    "Café",
    "Straße",
    "STRASSE",
    "İstanbul",
    "\u3000ideographic space\u3000",
    "\x1cfile separator\x1f",
    "emoji 🧬",
    "",
    "   ",
    "x" * 200,
    "123-45-6789",
    None,
]


def reference(
    key: bytes, value: object, *, case_fold: bool = False, bits: int = 256, encoding: str = "hex"
) -> str | None:
    """The documented definition, written independently of the Spark code."""
    if value is None:
        return None
    text = unicodedata.normalize("NFC", str(value)).strip()
    if case_fold:
        text = text.casefold()
    mac = hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()[: bits // 8]
    if encoding == "hex":
        return mac.hex()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def stage(columns: list[dict], **extra: object) -> PseudonymizeStage:
    return PseudonymizeStage.model_validate(
        {
            "name": "pseudo",
            "kind": "pseudonymize",
            "input": {"path": "in"},
            "output": {"path": "out"},
            "columns": columns,
            **extra,
        }
    )


@pytest.fixture(params=[True, False], ids=["jvm", "builtins"])
def jvm(request, spark) -> bool:
    """Both implementations: privstage's Java function and the Spark built-in composition."""
    from privstage.jvm import udf_available

    if request.param:
        assert udf_available(spark), "make builds the jar and the test session loads it"
    return request.param


def run(spark, rows, schema, columns, jvm=None, **extra):
    df = spark.createDataFrame(rows, schema)
    spec = stage(columns, **extra)
    plan = ps.plan(spec, df.schema, PROVIDER)
    return ps.apply(df, plan, spark=spark, jvm=jvm)


@pytest.mark.parametrize(
    ("case_fold", "bits", "encoding"),
    [(False, 256, "hex"), (True, 256, "hex"), (False, 128, "base64url"), (True, 192, "base64url"), (False, 136, "hex")],
)
def test_matches_reference_hmac(spark, jvm, case_fold, bits, encoding):
    rows = [(i, v) for i, v in enumerate(TRICKY)]
    out = run(
        spark,
        rows,
        "i int, v string",
        [{"column": "v", "key_id": "key_a", "case_fold": case_fold, "bits": bits, "encoding": encoding}],
        jvm=jvm,
    )
    got = {r.i: r.v for r in out.collect()}
    for i, value in rows:
        assert got[i] == reference(KEY_A, value, case_fold=case_fold, bits=bits, encoding=encoding), repr(value)


def test_normalisation_links_equivalent_spellings(spark, jvm):
    out = run(
        spark,
        [(1, "Cafe\u0301 "), (2, " Café"), (3, "CAFÉ"), (4, "Straße"), (5, "STRASSE")],
        "i int, v string",
        [{"column": "v", "key_id": "key_a", "case_fold": True}],
        jvm=jvm,
    )
    got = {r.i: r.v for r in out.collect()}
    assert got[1] == got[2] == got[3]
    assert got[4] == got[5]
    assert got[1] != got[4]


def test_nulls_stay_null_and_empty_is_a_value(spark, jvm):
    out = run(spark, [(1, None), (2, "")], "i int, v string", [{"column": "v", "key_id": "key_a"}], jvm=jvm)
    got = {r.i: r.v for r in out.collect()}
    assert got[1] is None
    assert got[2] == reference(KEY_A, "")


def test_integer_columns_hash_their_decimal_text(spark, jvm):
    out = run(spark, [(1, 42), (2, -7), (3, None)], "i int, v long", [{"column": "v", "key_id": "key_a"}], jvm=jvm)
    got = {r.i: r.v for r in out.collect()}
    assert got == {1: reference(KEY_A, "42"), 2: reference(KEY_A, "-7"), 3: None}
    assert dict(out.dtypes)["v"] == "string"


def test_different_keys_give_unrelated_pseudonyms(spark, jvm):
    out = run(
        spark,
        [(1, "alice", "alice")],
        "i int, a string, b string",
        [{"column": "a", "key_id": "key_a"}, {"column": "b", "key_id": "key_b"}],
        jvm=jvm,
    ).first()
    assert out.a == reference(KEY_A, "alice")
    assert out.b == reference(KEY_B, "alice")
    assert out.a != out.b


def test_per_tenant_keys_unlink_tenants(spark, jvm):
    rows = [(1, "T1", "alice"), (2, "T2", "alice"), (3, "T1", "alice"), (4, "T2", None)]
    out = run(
        spark,
        rows,
        "i int, tenant string, v string",
        [{"column": "v", "key_id": "key_a"}],
        jvm=jvm,
        tenant_column="tenant",
    )
    got = {r.i: r.v for r in out.collect()}

    def tenant_key(tenant: str) -> bytes:
        return HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"privstage/pseudonymize/tenant/" + tenant.encode()
        ).derive(KEY_A)

    assert got[1] == got[3] == reference(tenant_key("T1"), "alice")
    assert got[2] == reference(tenant_key("T2"), "alice")
    assert got[1] != got[2]
    assert got[1] != reference(KEY_A, "alice")
    assert got[4] is None


def test_renamed_column_replaces_raw_column_in_place(spark):
    out = run(
        spark,
        [(1, "alice", 3.0)],
        "i int, name string, cost double",
        [{"column": "name", "key_id": "key_a", "output_column": "name_pseudonym"}],
    )
    assert out.columns == ["i", "name_pseudonym", "cost"]


@pytest.mark.parametrize(
    ("columns", "schema", "message"),
    [
        ([{"column": "nope", "key_id": "key_a"}], "i int, v string", "column 'nope' is not in the input"),
        ([{"column": "v", "key_id": "key_a"}], "i int, v double", "column 'v' has type double"),
        ([{"column": "v", "key_id": "key_a"}], "i int, v date", "column 'v' has type date"),
        (
            [{"column": "v", "key_id": "key_a", "output_column": "i"}],
            "i int, v string",
            "output_column 'i' of 'v' clashes",
        ),
    ],
)
def test_plan_rejects_bad_columns(spark, columns, schema, message):
    df = spark.createDataFrame([], schema)
    with pytest.raises(SpecError, match=message) as info:
        ps.plan(stage(columns), df.schema, PROVIDER)
    assert info.value.stage == "pseudo"


def test_missing_key_id_is_key_unavailable_naming_the_id(spark):
    df = spark.createDataFrame([], "v string")
    with pytest.raises(KeyUnavailable, match="no-such-key") as info:
        ps.plan(stage([{"column": "v", "key_id": "no-such-key"}]), df.schema, PROVIDER)
    assert info.value.key_id == "no-such-key"


def test_unkeyed_hashing_cannot_be_configured():
    with pytest.raises(ValueError, match="key_id"):
        stage([{"column": "v"}])
    with pytest.raises(ValueError, match="inline key material"):
        stage([{"column": "v", "key_id": "key_a", "key": "c2VjcmV0"}])


def test_key_never_in_plan_and_hot_path_stays_in_the_jvm(spark, jvm):
    out = run(
        spark, [(1, "alice")], "i int, v string", [{"column": "v", "key_id": "key_a", "case_fold": True}], jvm=jvm
    )
    plan_text = out._jdf.queryExecution().toString()  # all four plans, as explain(True) prints them
    ipad, opad = ps.hmac_blocks(KEY_A)
    for secret in (KEY_A, ipad, opad):
        for form in (secret.hex(), secret.hex().upper(), base64.b64encode(secret).decode()):
            assert form not in plan_text
            assert form[:24] not in plan_text
    assert "BatchEvalPython" not in plan_text
    assert "ArrowEvalPython" not in plan_text
    assert "BroadcastNestedLoopJoin" in plan_text or "BroadcastHashJoin" in plan_text


def test_hmac_blocks_match_rfc2104():
    inner, outer = ps.hmac_blocks(KEY_A)
    message = b"privstage"
    manual = hashlib.sha256(outer + hashlib.sha256(inner + message).digest()).digest()
    assert manual == hmac.new(KEY_A, message, hashlib.sha256).digest()


def test_both_implementations_agree_on_generated_visits(spark):
    from privstage.sample_data import clinic_visits_spark

    df = clinic_visits_spark(spark, 20_000)
    spec = stage(
        [
            {"column": "patient_id", "key_id": "key_a"},
            {"column": "name", "key_id": "key_b", "case_fold": True, "bits": 128, "encoding": "base64url"},
            {"column": "email", "key_id": "key_a", "case_fold": True, "bits": 192},
        ]
    )
    plan = ps.plan(spec, df.schema, PROVIDER)
    jvm_out = ps.apply(df, plan, spark=spark, jvm=True)
    builtin_out = ps.apply(df, plan, spark=spark, jvm=False)
    assert jvm_out.exceptAll(builtin_out).count() == 0
    assert builtin_out.exceptAll(jvm_out).count() == 0

"""Keyed pseudonymization: HMAC-SHA-256 of a normalised value, computed in the JVM.

Definition (any HMAC library reproduces it)::

    normalise(v) = casefold?(strip(NFC(v)))            # strip = Unicode whitespace, as str.strip()
    pseudonym(v) = encode(HMAC-SHA-256(K, UTF-8(normalise(v)))[: bits / 8])
    K            = the key's material, or with tenant_column set,
                   HKDF-SHA-256(key, info = "privstage/pseudonymize/tenant/" + UTF-8(tenant))

``encode`` is lower-case hex or unpadded base64url. Integers are pseudonymized as their decimal
text. Nulls stay null (a null is not a value to hide, and mapping it to a pseudonym would make all
missing values link together). Unkeyed hashing cannot be configured.

How it runs: rows never leave the JVM. With privstage's jar on the classpath (``make`` builds it;
sessions privstage creates load it) a Java function computes the pseudonym with one cached ``Mac``
per key. Without it, the same HMAC is composed from Spark built-ins (``sha2`` over the ipad / opad
concatenations; ICU4J through ``reflect`` for non-ASCII normalisation): same output, slower, as
``reflect`` disables whole-stage code generation. Either way the key reaches the executors as a
column of a one-row (or one-row-per-tenant) relation joined by broadcast, never as a literal:
``explain()``, the SQL UI and the event log show the relation's column names, not its values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from privstage.errors import SpecError
from privstage.guards.builtin import (
    NonEmptyGuard,
    NoNullsGuard,
    NoRawValuesGuard,
    NullsPreservedGuard,
    RowCountPreservedGuard,
)
from privstage.keys.base import Key, KeyProvider

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from privstage.guards.base import Guard
    from privstage.spec import PseudonymColumn, PseudonymizeStage

__all__ = ["PseudonymizePlan", "apply", "hmac_blocks", "plan"]

_BLOCK = 64  # SHA-256 block size in bytes
_KEY_PREFIX = "__privstage_k"
_TENANT_COL = "__privstage_tenant"
#: ASCII whitespace that Python's str.strip() removes.
_ASCII_WS = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
#: Unicode whitespace as str.strip() sees it (Java White_Space plus the ASCII separators).
_UNICODE_WS_EDGES = r"(?U)^[\s\x{1c}-\x{1f}]+|[\s\x{1c}-\x{1f}]+$"
MAX_TENANTS = 100_000


def hmac_blocks(key: bytes) -> tuple[bytes, bytes]:
    """The HMAC inner and outer padded key blocks (RFC 2104) for a key of at most 64 bytes."""
    if len(key) > _BLOCK:
        raise ValueError("HMAC keys longer than the block size are hashed first; privstage keys are 32 bytes")
    padded = key.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in padded), bytes(b ^ 0x5C for b in padded)


def tenant_key(key: Key, tenant: str) -> bytes:
    """The per-tenant HMAC key: HKDF of the column key with the tenant as context."""
    return key.derive("pseudonymize/tenant", tenant.encode("utf-8"))


@dataclass(frozen=True)
class PseudonymizePlan:
    """What the stage resolved before touching data. Holds keys: never serialize it."""

    stage: PseudonymizeStage
    keys: Mapping[str, Key] = field(repr=False)
    input_columns: tuple[str, ...]
    output_schema: Any = None

    @property
    def key_versions(self) -> dict[str, int]:
        return {key_id: key.version for key_id, key in sorted(self.keys.items())}

    def output_name(self, col: PseudonymColumn) -> str:
        return col.output_column or col.column


def _check_type(stage: PseudonymizeStage, col: PseudonymColumn, schema: StructType) -> None:
    from pyspark.sql.types import ByteType, IntegerType, LongType, ShortType, StringType

    dtype = schema[col.column].dataType
    if not isinstance(dtype, StringType | ByteType | ShortType | IntegerType | LongType):
        raise SpecError(
            f"column '{col.column}' has type {dtype.simpleString()}; pseudonymize takes string or integer columns",
            stage=stage.name,
        )


def plan(stage: PseudonymizeStage, schema: StructType, keys: KeyProvider, *, env: Any = None) -> PseudonymizePlan:
    """Resolve columns and keys against the input schema. No data is read.

    Raises:
        SpecError: unknown column, wrong type, name clash.
        KeyUnavailable: a key id is not in the provider.
    """
    names = list(schema.fieldNames())
    for col in stage.columns:
        if col.column not in names:
            raise SpecError(
                f"column '{col.column}' is not in the input (columns: {', '.join(names)})", stage=stage.name
            )
        _check_type(stage, col, schema)
        if col.output_column and col.output_column != col.column and col.output_column in names:
            raise SpecError(
                f"output_column '{col.output_column}' of '{col.column}' clashes with an input column",
                stage=stage.name,
            )
    if stage.tenant_column is not None and stage.tenant_column not in names:
        raise SpecError(f"tenant_column '{stage.tenant_column}' is not in the input", stage=stage.name)
    for name in stage.sensitive_columns:
        if name not in names:
            raise SpecError(f"sensitive column '{name}' is not in the input", stage=stage.name)
    resolved: dict[str, Key] = {}
    for key_id in sorted(stage.key_ids()):
        try:
            resolved[key_id] = keys.get(key_id)
        except Exception as exc:
            exc.stage = getattr(exc, "stage", None) or stage.name  # type: ignore[attr-defined]
            raise
    return PseudonymizePlan(stage=stage, keys=resolved, input_columns=tuple(names))


def _normalised(value: Column, case_fold: bool) -> Column:
    from pyspark.sql import functions as F

    text = value.cast("string")
    is_ascii = F.length(text) == F.octet_length(text)
    ascii_path = F.trim(text, F.lit(_ASCII_WS))
    unicode_nfc = F.call_function("reflect", F.lit("com.ibm.icu.text.Normalizer"), F.lit("compose"), text, F.lit(False))
    unicode_path = F.regexp_replace(unicode_nfc, _UNICODE_WS_EDGES, "")
    if case_fold:
        ascii_path = F.lower(ascii_path)
        unicode_path = F.call_function(
            "reflect", F.lit("com.ibm.icu.lang.UCharacter"), F.lit("foldCase"), unicode_path, F.lit(True)
        )
    return F.when(text.isNull(), F.lit(None).cast("string")).when(is_ascii, ascii_path).otherwise(unicode_path)


def _pseudonym(value: Column, inner: Column, outer: Column, col: PseudonymColumn) -> Column:
    from pyspark.sql import functions as F

    message = F.encode(_normalised(value, col.case_fold), "UTF-8")
    inner_hash = F.unhex(F.sha2(F.concat(inner, message), 256))
    mac_hex = F.sha2(F.concat(outer, inner_hash), 256)  # lower-case hex already
    if col.encoding == "hex":
        return mac_hex if col.bits == 256 else F.substring(mac_hex, 1, col.bits // 4)
    mac = F.unhex(mac_hex)
    if col.bits < 256:
        mac = F.substring(mac, 1, col.bits // 8)
    return F.rtrim(F.translate(F.base64(mac), "+/", "-_"), F.lit("="))


def _pseudonym_jvm(value: Column, key: Column, col: PseudonymColumn) -> Column:
    from pyspark.sql import functions as F

    from privstage.jvm import PSEUDONYM_UDF

    options = f"{int(col.case_fold)},{col.bits},{'hex' if col.encoding == 'hex' else 'b64'}"
    return F.call_udf(PSEUDONYM_UDF, value.cast("string"), key, F.lit(options))


def _key_relation(spark: SparkSession, p: PseudonymizePlan, tenants: list[str] | None, jvm: bool) -> DataFrame:
    """The broadcast relation carrying the keys (the JVM path) or the padded HMAC key blocks (the
    built-in path): one row, or one per tenant."""
    from pyspark.sql.types import BinaryType, StringType, StructField, StructType

    key_ids = sorted(p.keys)
    fields = [StructField(_TENANT_COL, StringType(), True)]
    for i, _ in enumerate(key_ids):
        names = [f"{_KEY_PREFIX}{i}"] if jvm else [f"{_KEY_PREFIX}{i}_i", f"{_KEY_PREFIX}{i}_o"]
        fields += [StructField(name, BinaryType()) for name in names]
    rows: list[tuple[Any, ...]] = []
    for tenant in tenants if tenants is not None else [None]:
        row: list[Any] = [tenant]
        for key_id in key_ids:
            key = p.keys[key_id]
            material = key.material() if tenant is None else tenant_key(key, tenant)
            row.extend([material] if jvm else hmac_blocks(material))
        rows.append(tuple(row))
    return spark.createDataFrame(rows, StructType(fields))


def distinct_tenants(df: DataFrame, stage: PseudonymizeStage) -> list[str]:
    """Distinct non-null tenant ids (an aggregate; bounded by MAX_TENANTS)."""
    assert stage.tenant_column is not None
    rows = df.select(stage.tenant_column).where(df[stage.tenant_column].isNotNull()).distinct().limit(MAX_TENANTS + 1)
    tenants = [str(r[0]) for r in rows.collect()]
    if len(tenants) > MAX_TENANTS:
        raise SpecError(
            f"tenant_column '{stage.tenant_column}' has more than {MAX_TENANTS} distinct tenants", stage=stage.name
        )
    return tenants


def apply(df: DataFrame, p: PseudonymizePlan, *, spark: SparkSession, jvm: bool | None = None) -> DataFrame:
    """The pseudonymized DataFrame (lazy). Column order is kept; renamed columns replace the original.

    Args:
        jvm: use privstage's JVM function (True), Spark built-ins (False) or whichever the session
            offers (None, the default).
    """
    from pyspark.sql import functions as F

    from privstage.jvm import udf_available

    stage = p.stage
    if jvm is None:
        jvm = udf_available(spark)
    tenants = distinct_tenants(df, stage) if stage.tenant_column else None
    keys_df = F.broadcast(_key_relation(spark, p, tenants, jvm))
    if tenants is None:
        joined = df.crossJoin(keys_df)
    else:
        joined = df.join(keys_df, df[stage.tenant_column].cast("string") == keys_df[_TENANT_COL], "left")
    index = {key_id: i for i, key_id in enumerate(sorted(p.keys))}
    by_column = {c.column: c for c in stage.columns}
    out: list[Column] = []
    for name in df.columns:
        col = by_column.get(name)
        if col is None:
            out.append(joined[name])
            continue
        i = index[col.key_id]
        if jvm:
            pseudonym = _pseudonym_jvm(joined[name], joined[f"{_KEY_PREFIX}{i}"], col)
        else:
            pseudonym = _pseudonym(joined[name], joined[f"{_KEY_PREFIX}{i}_i"], joined[f"{_KEY_PREFIX}{i}_o"], col)
        out.append(pseudonym.alias(p.output_name(col)))
    return joined.select(*out)


def builtin_guards(p: PseudonymizePlan) -> tuple[list[Guard], list[Guard]]:
    """Guards every pseudonymize stage runs, whatever the spec says."""
    stage = p.stage
    # NoNullsGuard first: the input's row and null counts then come from one Spark job (shared DataStats).
    before: list[Guard] = [NoNullsGuard((stage.tenant_column,))] if stage.tenant_column else []
    before.append(NonEmptyGuard())
    pairs = tuple((c.column, p.output_name(c)) for c in stage.columns)
    after: list[Guard] = [
        NullsPreservedGuard(pairs),  # first: counts rows and nulls of both sides in one job each
        RowCountPreservedGuard(),
        NoRawValuesGuard(pairs, raw_columns_must_be_absent=tuple(c.column for c in stage.columns if c.output_column)),
    ]
    return before, after

"""privstage's JVM helpers: a jar built from ``jvm/src`` by ``make`` (JDK 17) and shipped in the wheel.

Spark loads it through ``spark.jars`` when privstage creates the session. Stages ask
:func:`udf_available` before using a JVM function and fall back to a composition of Spark
built-ins (same output, slower) when the session was created without the jar.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

__all__ = [
    "FIELD_DECRYPT_UDF",
    "FIELD_ENCRYPT_UDF",
    "JAR",
    "KMS_CLIENT_CLASS",
    "PSEUDONYM_UDF",
    "field_udfs_available",
    "jar_path",
    "udf_available",
]

JAR = Path(__file__).with_name("privstage-spark.jar")
PSEUDONYM_UDF = "privstage_pseudonym_v1"
_PSEUDONYM_CLASS = "io.privstage.spark.Pseudonym"
FIELD_ENCRYPT_UDF = "privstage_field_encrypt_v1"
FIELD_DECRYPT_UDF = "privstage_field_decrypt_v1"
#: Parquet KmsClient over a key directory (privstage.crypto.file sets it per read / write).
KMS_CLIENT_CLASS = "io.privstage.spark.DirectoryKmsClient"

log = logging.getLogger("privstage")
_lock = threading.Lock()
_probed: dict[int, bool] = {}


def jar_path() -> Path | None:
    """The built jar, or None when ``make`` has not built it."""
    return JAR if JAR.is_file() else None


def udf_available(spark: Any) -> bool:
    """Register privstage's JVM functions on ``spark``; False when the jar is not on its classpath.

    The answer is cached per session. A one-row probe runs once, so that a missing class is found
    here rather than in the middle of a stage (Spark Connect resolves Java UDFs lazily).
    """
    key = id(spark)
    with _lock:
        if key in _probed:
            return _probed[key]
        try:
            spark.udf.registerJavaFunction(PSEUDONYM_UDF, _PSEUDONYM_CLASS, "string")
            probe = spark.range(1).selectExpr(f"{PSEUDONYM_UDF}('x', X'{'00' * 32}', '0,256,hex') AS p").collect()
            ok = len(probe[0]["p"]) == 64
        except Exception as exc:  # class not found, Connect server without the jar, ...
            log.info("privstage JVM functions unavailable (%s); using Spark built-ins", type(exc).__name__)
            ok = False
        _probed[key] = ok
        return ok


_field_probed: dict[int, bool] = {}


def field_udfs_available(spark: Any) -> bool:
    """Register the field-encryption functions on ``spark``; False when the jar is not on its classpath.

    Cached per session; a one-row probe runs once (a round trip through both functions with a zero key).
    """
    key = id(spark)
    with _lock:
        if key in _field_probed:
            return _field_probed[key]
        try:
            spark.udf.registerJavaFunction(FIELD_ENCRYPT_UDF, "io.privstage.spark.FieldEncrypt", "binary")
            spark.udf.registerJavaFunction(FIELD_DECRYPT_UDF, "io.privstage.spark.FieldDecrypt", "string")
            zero = f"X'{'00' * 32}'"
            sealed = f"{FIELD_ENCRYPT_UDF}('x', {zero}, 1, 'd', 'c', 'r')"
            probe = spark.range(1).selectExpr(f"{FIELD_DECRYPT_UDF}({sealed}, {zero}, 1, 'd', 'c', 'r') AS p").collect()
            ok = probe[0]["p"] == "x"
        except Exception as exc:  # class not found, Connect server without the jar, ...
            log.info("privstage field-encryption functions unavailable (%s)", type(exc).__name__)
            ok = False
        _field_probed[key] = ok
        return ok

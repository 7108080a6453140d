"""Executor-side packing and adding of ciphertexts (Arrow batches via ``mapInArrow``).

Design:

* The public context reaches executors as **bytes in the function's closure** (serialized once per
  task with the function, which works on classic Spark and Spark Connect alike; TenSEAL objects do
  not pickle). Each Python worker deserializes it once and caches it by fingerprint.
* **Packing** is one pass over a partition: values are quantized to the measure's grid (or arrive
  quantized from a Spark aggregate), scatter-added into one dense slot vector per ciphertext chunk
  (``numpy.bincount`` for CKKS, exact ``int64`` for BFV), checked against the declared bounds, and
  each chunk is encrypted under the public key and emitted as serialized bytes with their SHA-256 (the
  manifest's digests then need no second pass over the ciphertexts; verifiers recompute them from
  the stored bytes). Positions with the
  same value add up, so a partition that saw part of a chunk emits a partial ciphertext; partial
  ciphertexts of a chunk simply add at the aggregator (the manifest counts them, the plan bounds them).
* **Adding** is a tree: every partition sums the ciphertexts it holds per chunk (a map-side
  combine), the partial sums are repartitioned by chunk, and a second pass adds them into one
  ciphertext per chunk. Only ciphertexts move; nothing is collected to the driver.
* Input that is not a valid ciphertext under the context (unparseable, other parameters, wrong slot
  count or scale, a transparent ciphertext that is really a plaintext) is not raised inside the
  executor (the error could not name the party reliably and Spark would retry it); it is emitted
  as a flagged row naming the party, and the driver raises :class:`~privstage.errors.IntegrityError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

__all__ = ["ADD_SCHEMA", "PACK_SCHEMA", "make_adder", "make_packer"]

#: Rows of a packed contribution (``chunk = -1`` rows only report unknown positions; never committed).
PACK_SCHEMA = (
    "chunk int, ciphertext binary, digest string, n_values long, n_rows long, out_of_bounds long, unknown long"
)
#: Rows of (partial) sums; ``reason`` is set on flagged input, with ``party`` naming its source.
ADD_SCHEMA = "chunk int, ciphertext binary, digest string, n_inputs long, party string, reason string"


def make_packer(
    *,
    context_bytes: bytes,
    fingerprint: str,
    scheme: str,
    slots: int,
    size: int,
    block: int,
    bounds: list[float] | list[int],
    quantize_decimals: list[int] | None,
) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """A ``mapInArrow`` function from ``(pos long, value double|long, rows long, values long)`` to PACK_SCHEMA.

    Args:
        context_bytes: The public context (verified on the driver; re-checked for a secret key here).
        fingerprint: Its SHA-256.
        scheme: ``"ckks"`` or ``"bfv"``.
        slots: Slots per ciphertext.
        size: Number of layout positions (positions ``>= size`` or null are unknown).
        block: Positions per measure (position ``p`` holds measure ``p // block``).
        bounds: Per measure, the bound on |slot value| in the packed representation (BFV: scaled integers).
        quantize_decimals: Per measure, decimals to quantize raw values to (BFV: then scaled to integers);
            ``None`` when values arrive quantized (and, for BFV, scaled).
    """
    integer = scheme == "bfv"
    bound_array = np.asarray(bounds, dtype=np.int64 if integer else np.float64)
    pow10 = None if quantize_decimals is None else np.asarray([10.0**d for d in quantize_decimals])

    def pack(batches: Iterator[Any]) -> Iterator[Any]:
        import hashlib

        import pyarrow as pa
        import tenseal as ts

        from privstage.he.context import load_context_cached

        ctx = load_context_cached(context_bytes, fingerprint)
        acc: dict[int, np.ndarray] = {}
        n_values: dict[int, int] = {}
        n_rows: dict[int, int] = {}
        unknown = 0
        for batch in batches:
            if batch.num_rows == 0:
                continue
            pos_col = batch.column(0)
            values_col = batch.column(1)
            rows = batch.column(2).to_numpy(zero_copy_only=False)
            counted = batch.column(3).to_numpy(zero_copy_only=False)
            valid = pos_col.is_valid().to_numpy(zero_copy_only=False) & values_col.is_valid().to_numpy(
                zero_copy_only=False
            )
            pos = pos_col.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
            valid &= (pos >= 0) & (pos < size)
            if not valid.all():
                unknown += int(counted[~valid].sum())
                pos, rows, counted = pos[valid], rows[valid], counted[valid]
                values_col = values_col.filter(pa.array(valid))
            if pos.size == 0:
                continue
            if integer and pow10 is None:
                values = values_col.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
            else:
                values = values_col.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
                if pow10 is not None:
                    scale = pow10[np.minimum(pos // block, len(pow10) - 1)]
                    values = np.rint(values * scale)
                    values = values.astype(np.int64) if integer else values / scale
            chunks = pos // slots
            slot = pos - chunks * slots
            for chunk in np.unique(chunks).tolist():
                sel = chunks == chunk
                target = acc.get(chunk)
                if target is None:
                    target = acc[chunk] = np.zeros(slots, dtype=np.int64 if integer else np.float64)
                    n_values[chunk] = n_rows[chunk] = 0
                if integer:
                    np.add.at(target, slot[sel], values[sel])
                else:
                    target += np.bincount(slot[sel], weights=values[sel], minlength=slots)
                n_values[chunk] += int(counted[sel].sum())
                n_rows[chunk] += int(rows[sel].sum())
        emitted = False
        for chunk in sorted(acc):
            vector = acc.pop(chunk)
            positions = chunk * slots + np.arange(slots, dtype=np.int64)
            measure = np.minimum(positions // block, len(bound_array) - 1)
            allowed = np.where(positions < size, bound_array[measure], 0)
            if integer:
                out_of_bounds = int(np.count_nonzero(np.abs(vector) > allowed))
                ciphertext = ts.bfv_vector(ctx, vector.tolist()).serialize()
            else:
                out_of_bounds = int(np.count_nonzero(np.abs(vector) > allowed * (1 + 1e-12)))
                ciphertext = ts.ckks_vector(ctx, vector).serialize()
            yield pa.RecordBatch.from_pydict(
                {
                    "chunk": pa.array([chunk], pa.int32()),
                    "ciphertext": pa.array([ciphertext], pa.binary()),
                    "digest": pa.array([hashlib.sha256(ciphertext).hexdigest()], pa.string()),
                    "n_values": pa.array([n_values[chunk]], pa.int64()),
                    "n_rows": pa.array([n_rows[chunk]], pa.int64()),
                    "out_of_bounds": pa.array([out_of_bounds], pa.int64()),
                    "unknown": pa.array([unknown if not emitted else 0], pa.int64()),
                }
            )
            emitted = True
        if unknown and not emitted:
            yield pa.RecordBatch.from_pydict(
                {
                    "chunk": pa.array([-1], pa.int32()),
                    "ciphertext": pa.array([None], pa.binary()),
                    "digest": pa.array([None], pa.string()),
                    "n_values": pa.array([0], pa.int64()),
                    "n_rows": pa.array([0], pa.int64()),
                    "out_of_bounds": pa.array([0], pa.int64()),
                    "unknown": pa.array([unknown], pa.int64()),
                }
            )

    return pack


def make_adder(
    *, context_bytes: bytes, fingerprint: str, scheme: str, slots: int, scale: float | None
) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """A ``mapInArrow`` function from ADD_SCHEMA rows to per-chunk sums in ADD_SCHEMA (flagged rows pass through)."""

    def add(batches: Iterator[Any]) -> Iterator[Any]:
        import hashlib

        import pyarrow as pa
        import tenseal as ts

        from privstage.he.context import load_context_cached

        ctx = load_context_cached(context_bytes, fingerprint)
        first_parms = list(ctx.seal_context().data.first_parms_id())
        load = ts.ckks_vector_from if scheme == "ckks" else ts.bfv_vector_from
        sums: dict[int, Any] = {}
        counts: dict[int, int] = {}
        flagged: list[tuple[int, str | None, str]] = []

        def check(vector: Any) -> str | None:
            if vector.size() != slots:
                return "wrong slot count"
            inner = vector.data.ciphertext()
            if len(inner) != 1:
                return "not a single ciphertext"
            ct = inner[0]
            if list(ct.parms_id()) != first_parms:
                return "made under other parameters"
            if ct.size() != 2 or ct.is_transparent():
                return "not a fresh ciphertext"
            if scale is not None and ct.scale != scale:
                return "wrong scale"
            return None

        for batch in batches:
            data = batch.to_pydict()
            for chunk, ciphertext, n_inputs, party, reason in zip(
                data["chunk"], data["ciphertext"], data["n_inputs"], data["party"], data["reason"], strict=True
            ):
                if reason is not None:
                    flagged.append((chunk, party, reason))
                    continue
                if ciphertext is None:
                    flagged.append((-1, party, "missing ciphertext"))
                    continue
                try:
                    vector = load(ctx, ciphertext)
                except Exception:  # any parse failure is the same integrity finding
                    flagged.append((-1, party, "does not deserialize under the public context"))
                    continue
                problem = check(vector)
                if problem is not None:
                    flagged.append((-1, party, problem))
                    continue
                if chunk in sums:
                    sums[chunk] += vector
                    counts[chunk] += int(n_inputs)
                else:
                    sums[chunk] = vector
                    counts[chunk] = int(n_inputs)
        for chunk in sorted(sums):
            ciphertext = sums.pop(chunk).serialize()
            yield pa.RecordBatch.from_pydict(
                {
                    "chunk": pa.array([chunk], pa.int32()),
                    "ciphertext": pa.array([ciphertext], pa.binary()),
                    "digest": pa.array([hashlib.sha256(ciphertext).hexdigest()], pa.string()),
                    "n_inputs": pa.array([counts[chunk]], pa.int64()),
                    "party": pa.array([None], pa.string()),
                    "reason": pa.array([None], pa.string()),
                }
            )
        if flagged:
            yield pa.RecordBatch.from_pydict(
                {
                    "chunk": pa.array([c for c, _, _ in flagged], pa.int32()),
                    "ciphertext": pa.array([None] * len(flagged), pa.binary()),
                    "digest": pa.array([None] * len(flagged), pa.string()),
                    "n_inputs": pa.array([0] * len(flagged), pa.int64()),
                    "party": pa.array([p for _, p, _ in flagged], pa.string()),
                    "reason": pa.array([r for _, _, r in flagged], pa.string()),
                }
            )

    return add

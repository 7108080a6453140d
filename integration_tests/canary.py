"""Canary helpers: every printable form of a secret, and a scanner over text and files."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from pathlib import Path


def secret_forms(secret: bytes) -> list[str]:
    """The encodings in which a key could leak: base64 (both alphabets), hex (both cases), and
    the HMAC pad blocks derived from it (what privstage actually ships to executors)."""
    from privstage.stages.pseudonymize import hmac_blocks

    forms: list[str] = []
    for raw in (secret, *hmac_blocks(secret)):
        forms += [
            base64.b64encode(raw).decode(),
            base64.urlsafe_b64encode(raw).decode(),
            raw.hex(),
            raw.hex().upper(),
        ]
    # a prefix catches truncated or line-wrapped copies
    return forms + [f[:20] for f in forms]


def text_forms(value: str) -> list[str]:
    return [value, value.replace("-", ""), base64.b64encode(value.encode()).decode()]


def leaks(haystacks: Iterable[tuple[str, str]], needles: Iterable[str]) -> list[str]:
    """(where, needle) pairs for every needle found in any haystack."""
    needles = list(needles)
    found = []
    for where, text in haystacks:
        for needle in needles:
            if needle and needle in text:
                found.append(f"{where}: {needle[:6]}…")
    return found


def _decompressed(path: Path) -> bytes:
    """File bytes; zstd files (Spark 4 compresses event logs by default) are decompressed, also
    when the last frame is still being written (what could be read before it is kept)."""
    raw = path.read_bytes()
    if path.suffix != ".zstd":
        return raw
    import zstandard

    # One streaming reader across all frames: the session's event log holds thousands of small frames, and
    # slicing the remaining input after each frame made the read quadratic (about 20 s for 190 MB).
    out = bytearray()
    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw), read_across_frames=True) as reader:
        while True:
            try:
                chunk = reader.read(1 << 16)  # small reads: a torn last frame loses little
            except zstandard.ZstdError:
                break
            if not chunk:
                break
            out += chunk
    return bytes(out)


def files_text(root: Path) -> Iterable[tuple[str, str]]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield str(path), _decompressed(path).decode("utf-8", errors="replace")

"""Checksums of the files prepare writes and caches: size and xxh3-128.

xxh3-128 (the `xxhash` package) reads about 5 GB/s on this project's machine class, SHA-256 0.9 GB/s: the
checks guard against damage (flipped bits, truncation, a stray write), not against an attacker.
"""

from __future__ import annotations

from pathlib import Path

import xxhash

HASH = "xxh3_128"
CHUNK_BYTES = 8 << 20


def file_checksum(path: str | Path) -> dict:
    """{"bytes": size, "xxh3_128": hex digest} of a file, read once."""
    digest, size = xxhash.xxh3_128(), 0
    buffer = memoryview(bytearray(CHUNK_BYTES))
    with open(path, "rb", buffering=0) as file:
        while read := file.readinto(buffer):
            digest.update(buffer[:read])
            size += read
    return {"bytes": size, HASH: digest.hexdigest()}


def file_problem(path: Path, expected: dict) -> str | None:
    """What is wrong with `path`, which should be the file `expected` describes (None: nothing)."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != expected["bytes"]:
        change = "truncated" if size < expected["bytes"] else "grown"
        return f"{change}: {size} bytes where {expected['bytes']} were written"
    if file_checksum(path)[HASH] != expected[HASH]:
        return f"damaged: its {HASH} checksum differs from the one recorded when it was written"
    return None

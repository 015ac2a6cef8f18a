"""Stable hashing: SplitMix64 of ints and string tokens, and the split a hash falls in.

Every hash here is identical on every machine, runner and Python version: the Beam writer, the
columnar parser and the tests agree on hashed ids and on which split a row lands in. The scalar
functions (:func:`stable_hash`, :func:`hash_token`) define the values; the array functions
(:func:`stable_hash_array`, :func:`hash_tokens`) are their vectorized forms and give the same values.
"""

from __future__ import annotations

import zlib
from typing import Mapping, Sequence

import numpy as np

from zoo.spec.schema import SPLITS


def stable_hash(value: int) -> int:
    """SplitMix64 of an integer: identical on every machine, runner and Python version."""
    z = (value + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


def hash_token(token: str) -> int:
    """Stable 64-bit hash of a string token (UTF-8 bytes, SplitMix64 over 8-byte little-endian words).

    ``hash_token(t) % hash_buckets`` is the stored id of a hashed ``string``/``hex`` token; the
    same on every machine, runner and Python version.
    """
    data = token.encode("utf-8")
    h = stable_hash(len(data))
    for i in range(0, len(data), 8):
        h = stable_hash(h ^ int.from_bytes(data[i:i + 8], "little"))
    return h


def stable_hash_array(values):
    """:func:`stable_hash` of every element of a ``uint64`` array."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def hash_tokens(tokens: Sequence[str]):
    """:func:`hash_token` of every token, as a ``uint64`` array (vectorized)."""
    if not tokens:
        return np.zeros(0, np.uint64)
    encoded = "\x00".join(tokens).encode("utf-8").split(b"\x00") if not any("\x00" in t for t in tokens) \
        else [t.encode("utf-8") for t in tokens]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    width = max(8, -(-int(lengths.max()) // 8) * 8)
    words = np.array(encoded, dtype=f"S{width}").view(np.uint8).reshape(len(encoded), width)
    words = words.view("<u8")
    h = stable_hash_array(lengths.astype(np.uint64))
    for k in range(words.shape[1]):
        active = lengths > 8 * k
        if not active.any():
            break
        h = np.where(active, stable_hash_array(h ^ words[:, k]), h)
    return h


def line_hash(line: bytes) -> int:
    """The hash that splits a raw line (``split_by: line``): ``stable_hash(crc32(line bytes))``."""
    return stable_hash(zlib.crc32(line))


def split_from_hash(split: Mapping[str, float], hashed: int) -> str:
    """The split whose cumulative fraction first exceeds ``hashed``'s bucket in ``[0, 1)``.

    Args:
      split: fraction of rows per split name (the spec's ``split``), summing to 1.
      hashed: a :func:`stable_hash` value (of the user id, or :func:`line_hash` of the line).
    """
    bucket = hashed % 10_000 / 10_000.0
    edge = 0.0
    for name in SPLITS:
        edge += split[name]
        if bucket < edge:
            return name
    return SPLITS[-1]


def split_edges(split: Mapping[str, float]) -> tuple[float, ...]:
    """Cumulative split fractions, as :func:`split_from_hash` compares them."""
    edges, edge = [], 0.0
    for name in SPLITS:
        edge += split[name]
        edges.append(edge)
    return tuple(edges)

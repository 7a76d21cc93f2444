"""Compact encodings for token ids and log-probs (little-endian int32 / float32)."""

from __future__ import annotations

import numpy as np


def encode_ids(ids: list[int] | None) -> bytes | None:
    return None if ids is None else np.asarray(ids, dtype="<i4").tobytes()


def decode_ids(blob: bytes | None) -> list[int] | None:
    return None if blob is None else np.frombuffer(blob, dtype="<i4").tolist()


def encode_floats(values: list[float] | None) -> bytes | None:
    return None if values is None else np.asarray(values, dtype="<f4").tobytes()


def decode_floats(blob: bytes | None) -> list[float] | None:
    return None if blob is None else np.frombuffer(blob, dtype="<f4").astype(float).tolist()

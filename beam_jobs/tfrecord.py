"""TFRecord framing in batches, and Beam I/O that moves whole batches of records.

A TFRecord file is a sequence of records, each framed as::

    uint64 length (little-endian) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)

The Beam jobs encode a batch of Examples at once (``FeatureSpec.encode_examples_flat``) and frame
the whole batch with array operations (:func:`frame_records`, CRC-32C computed for all records
together); the framed batch is compressed as one gzip member per shard it goes to
(``fileio.gzip_member``), so a batch travels through the pipeline as a few ``bytes`` elements and
shards are concatenations of members, which every gzip reader
(``tf.data.TFRecordDataset(..., compression_type="GZIP")`` included) reads as one stream.
:func:`read_record_batches` reads an open TFRecord stream back as batches of records (CRCs
verified; ``beam_jobs.verify`` uses it), :class:`ReadTFRecordBatches` does so for the files of a
pattern in a pipeline.
"""

from __future__ import annotations

import posixpath
import struct
from typing import Iterator, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io import filebasedsource
from apache_beam.io.filesystem import CompressionTypes

from beam_jobs import fileio
from beam_jobs.manifest import VERIFY_COMMAND

_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected
RECORD_OVERHEAD = 16  # framing bytes per record: 8 length, 4 length CRC, 4 data CRC


def _crc_tables() -> np.ndarray:
    t0 = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        t0[i] = c
    tables = [t0]
    for _ in range(3):  # slicing-by-4: T_k[i] = CRC of byte i followed by k zero bytes
        prev = tables[-1]
        tables.append((prev >> 8) ^ t0[prev & 0xFF])
    return np.stack(tables)


_TABLES = _crc_tables()
_T0, _T1, _T2, _T3 = _TABLES


def crc32c(data: bytes) -> int:
    """CRC-32C of one byte string (reference implementation, for tests and single records)."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = int(_T0[(crc ^ b) & 0xFF]) ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc32c_rows(data: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """CRC-32C of each row prefix ``data[i, :lengths[i]]`` of a left-aligned ``(N, W)`` uint8 array."""
    data = np.ascontiguousarray(data, dtype=np.uint8)
    n, width = data.shape
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.arange(n, dtype=np.int64) * width
    return crc32c_flat(data.reshape(-1), starts, lengths)


def crc32c_flat(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """CRC-32C of the records ``flat[starts[i]:starts[i] + lengths[i]]`` of one uint8 buffer.

    All records advance together, four bytes a step (slicing-by-4 tables). The records are copied,
    longest first, into the rows of a left-aligned matrix (rows of a sliding-window view of the
    buffer), so the rows still active at a step are a prefix of the matrix.
    """
    n = lengths.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.uint32)
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    lens = lengths[order]
    width = max(-(-int(lens[0]) // 4) * 4, 4)
    padded = np.zeros(flat.shape[0] + width, dtype=np.uint8)
    padded[:flat.shape[0]] = flat
    rows = np.lib.stride_tricks.sliding_window_view(padded, width)[np.asarray(starts, dtype=np.int64)[order]]
    quads = rows.view("<u4")  # (N, width / 4)
    c = np.full(n, 0xFFFFFFFF, dtype=np.uint32)
    nwords = lens // 4
    active = np.searchsorted(-nwords, -np.arange(1, width // 4 + 1), side="right").tolist()
    for j, m in enumerate(active):
        if not m:
            break
        x = c[:m] ^ quads[:m, j]
        c[:m] = _T3.take(x & 0xFF) ^ _T2.take((x >> 8) & 0xFF) ^ _T1.take((x >> 16) & 0xFF) ^ _T0.take(x >> 24)
    for t in range(3):
        pos = nwords * 4 + t
        live = np.flatnonzero(lens > pos)
        if not live.size:
            break
        b = rows[live, pos[live]].astype(np.uint32)
        c[live] = _T0.take((c[live] ^ b) & 0xFF) ^ (c[live] >> 8)
    out = np.empty(n, dtype=np.uint32)
    out[order] = c ^ np.uint32(0xFFFFFFFF)
    return out


def masked_crc(crc):
    """TFRecord's masked CRC: ``((crc >> 15) | (crc << 17)) + 0xa282ead8`` (mod 2**32)."""
    crc = np.asarray(crc, dtype=np.uint32)
    with np.errstate(over="ignore"):
        return ((crc >> np.uint32(15)) | (crc << np.uint32(17))) + np.uint32(0xA282EAD8)


def frame_records(flat: np.ndarray, lengths: np.ndarray) -> bytes:
    """TFRecord framing of records given back to back in ``flat`` (uint8) with their ``lengths``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    n = lengths.shape[0]
    if n == 0:
        return b""
    ends = np.cumsum(lengths)
    starts = ends - lengths
    header = np.empty((n, 12), dtype=np.uint8)
    header[:, :8] = lengths.astype("<u8").view(np.uint8).reshape(n, 8)
    header[:, 8:] = masked_crc(crc32c_flat(header[:, :8].reshape(-1), np.arange(n, dtype=np.int64) * 8,
                                           np.full(n, 8, dtype=np.int64))).astype("<u4").view(np.uint8).reshape(n, 4)
    trailer = masked_crc(crc32c_flat(flat, starts, lengths)).astype("<u4").tobytes()
    head, data = header.tobytes(), flat.tobytes()
    parts = []
    append = parts.append
    for i, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
        append(head[12 * i:12 * i + 12])
        append(data[s:e])
        append(trailer[4 * i:4 * i + 4])
    return b"".join(parts)


def frame(records: Sequence[bytes]) -> bytes:
    """TFRecord framing of a list of serialized records."""
    if not records:
        return b""
    flat = np.frombuffer(b"".join(records), dtype=np.uint8)
    return frame_records(flat, np.fromiter(map(len, records), dtype=np.int64, count=len(records)))


def unframe(blob: bytes, verify: bool = True) -> list[bytes]:
    """The records of back-to-back framed TFRecords (checks the CRCs unless ``verify`` is False)."""
    out, pos, end = [], 0, len(blob)
    unpack = struct.unpack_from
    while pos < end:
        if end - pos < 12:
            raise ValueError(f"truncated TFRecord header at byte {pos}")
        (length,) = unpack("<Q", blob, pos)
        if pos + 16 + length > end:
            raise ValueError(f"truncated TFRecord of {length} bytes at byte {pos}")
        out.append(blob[pos + 12: pos + 12 + length])
        pos += 16 + length
    if verify and out:
        _verify(blob, out)
    return out


def _verify(blob: bytes, records: list[bytes]) -> None:
    lengths = np.fromiter(map(len, records), dtype=np.int64, count=len(records))
    expected = frame_records(np.frombuffer(b"".join(records), dtype=np.uint8), lengths)
    if expected != blob:
        raise ValueError("TFRecord CRC mismatch: the data is corrupted")


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------
def read_record_batches(fh, batch_bytes: int = 1 << 20, name: str = "") -> Iterator[list[bytes]]:
    """The records of an open (decompressed) TFRecord stream, about ``batch_bytes`` of them at a time.

    CRCs are checked (:func:`unframe`).

    Raises:
      ValueError: a record's CRC does not match, or the stream ends inside a record (the message
        starts with ``name``, when given).
    """
    pending = b""
    while True:
        chunk = fh.read(batch_bytes)
        data = pending + chunk if pending else chunk
        if not data:
            return
        # Cut after the last complete record.
        pos, end = 0, len(data)
        while pos + 12 <= end:
            (length,) = struct.unpack_from("<Q", data, pos)
            if pos + RECORD_OVERHEAD + length > end:
                break
            pos += RECORD_OVERHEAD + length
        if pos:
            try:
                yield unframe(data[:pos])
            except ValueError as err:
                raise ValueError(f"{name}: {err}" if name else str(err)) from None
        pending = data[pos:]
        if not chunk:
            if pending:
                raise ValueError(f"{name}: " * bool(name) + "truncated TFRecord at the end of the file")
            return


class _TFRecordBatchSource(filebasedsource.FileBasedSource):
    """Whole TFRecord files (compression by extension), as ``(file, [records])`` batches."""

    def __init__(self, file_pattern: str, batch_bytes: int):
        super().__init__(file_pattern, compression_type=CompressionTypes.AUTO, splittable=False)
        self._batch_bytes = batch_bytes

    def read_records(self, file_name: str, range_tracker) -> Iterator[tuple[str, list[bytes]]]:
        if not range_tracker.try_claim(range_tracker.start_position()):
            return
        try:
            with fileio.open_decompressed(file_name, self.open_file) as fh:
                for records in read_record_batches(fh, self._batch_bytes):
                    yield file_name, records
        except (ValueError, *fileio.READ_ERRORS) as err:  # a corrupt shard: one line naming it
            data_dir = posixpath.dirname(posixpath.dirname(file_name.replace("\\", "/")))
            raise fileio.unreadable(file_name, err, f"check the directory with `{VERIFY_COMMAND} {data_dir}`, "
                                    "then re-copy it or re-run the Beam job that wrote it") from None


class ReadTFRecordBatches(beam.PTransform):
    """Reads TFRecord files matching a pattern as ``(file name, [serialized records])`` batches."""

    def __init__(self, file_pattern: str, batch_bytes: int = 1 << 20):
        super().__init__()
        self._source = _TFRecordBatchSource(file_pattern, batch_bytes)

    def expand(self, pbegin):
        return pbegin | beam.io.Read(self._source)

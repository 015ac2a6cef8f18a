"""The ``tf.train.Example`` wire format, written and read without TensorFlow.

Beam workers never import TensorFlow, so stored records are built here from the Example schema
(``tensorflow/core/example/{example,feature}.proto``):

* :func:`example_class` is the protobuf message class, from a private descriptor pool;
* :func:`example_values` is what one parsed row stores (label, features, padded sequences, cohort
  ids), :func:`encode_example` its serialized record;
* :func:`example_columns` / :func:`encode_examples_flat` are the batched form: the same bytes,
  written per key with array operations by a hand-written protobuf wire encoder;
* :func:`decode_examples` reads stored records back as columns.

Serialization is deterministic (map keys sorted by their UTF-8 bytes), so a row gives the same
bytes in every process. :class:`zoo.spec.FeatureSpec` exposes these as methods.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from zoo.spec.schema import COHORT_KEY_PREFIX, PAD_ID, Feature, SpecView

_EXAMPLE_CLASS = None


def example_class():
    """The ``tf.train.Example`` message class, built from its schema without importing TensorFlow.

    Beam workers encode and decode Examples with it; the wire format is TensorFlow's
    (``tensorflow/core/example/{example,feature}.proto``), in a private descriptor pool so it never
    clashes with TensorFlow's own registration.
    """
    global _EXAMPLE_CLASS
    if _EXAMPLE_CLASS is None:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        fdp = descriptor_pb2.FileDescriptorProto(name="zoo_spec/tf_example.proto", package="tensorflow",
                                                 syntax="proto3")
        F = descriptor_pb2.FieldDescriptorProto
        for name, ftype in (("BytesList", F.TYPE_BYTES), ("FloatList", F.TYPE_FLOAT), ("Int64List", F.TYPE_INT64)):
            m = fdp.message_type.add(name=name)
            m.field.add(name="value", number=1, type=ftype, label=F.LABEL_REPEATED)
        feature = fdp.message_type.add(name="Feature")
        feature.oneof_decl.add(name="kind")
        for number, (fname, tname) in enumerate(
                (("bytes_list", "BytesList"), ("float_list", "FloatList"), ("int64_list", "Int64List")), 1):
            feature.field.add(name=fname, number=number, type=F.TYPE_MESSAGE, type_name=f".tensorflow.{tname}",
                              label=F.LABEL_OPTIONAL, oneof_index=0)
        features = fdp.message_type.add(name="Features")
        entry = features.nested_type.add(name="FeatureEntry")
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
        entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, type_name=".tensorflow.Feature",
                        label=F.LABEL_OPTIONAL)
        features.field.add(name="feature", number=1, type=F.TYPE_MESSAGE,
                           type_name=".tensorflow.Features.FeatureEntry", label=F.LABEL_REPEATED)
        example = fdp.message_type.add(name="Example")
        example.field.add(name="features", number=1, type=F.TYPE_MESSAGE, type_name=".tensorflow.Features",
                          label=F.LABEL_OPTIONAL)
        pool = descriptor_pool.DescriptorPool()
        pool.Add(fdp)
        _EXAMPLE_CLASS = message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))
    return _EXAMPLE_CLASS


def example_values(spec: SpecView, row: Mapping[str, Any]) -> dict[str, list]:
    """Feature key -> value list as stored in a ``tf.train.Example``.

    Stores every label, every feature (ids as given: OOV mapping is the model's
    job, so the record keeps the truth and the OOV count stays auditable),
    padded sequences and the cohort id of every axis.
    """
    values: dict[str, list] = {label: [float(row[label])] for label in spec.labels}
    for f in spec.features:
        v = row[f.name]
        if f.kind == "sequence":
            values[f.name] = pad_sequence(f, v)[0]
        else:
            values[f.name] = [v]
    for axis, cid in spec.cohort_ids(row).items():
        values[COHORT_KEY_PREFIX + axis] = [cid]
    return values


def pad_sequence(feature: Feature, ids: Sequence[int]) -> tuple[list[int], bool]:
    """Pads/truncates to ``max_length``; returns (ids, was_truncated)."""
    n = feature.max_length
    truncated = len(ids) > n
    if truncated:
        ids = ids[-n:] if feature.truncation == "keep_last" else ids[:n]
    return list(ids) + [PAD_ID] * (n - len(ids)), truncated


def encode_example(spec: SpecView, row: Mapping[str, Any]) -> bytes:
    """Serialized ``tf.train.Example`` of a parsed row (filled in place: no per-key protos).

    Serialization is deterministic (map keys sorted), so the same row gives the same bytes in
    every process; :func:`encode_examples` is the batched form and gives identical bytes.
    Uses the ``tf.train.Example`` wire schema without importing TensorFlow.
    """
    example = example_class()()
    feature = example.features.feature
    float_keys = spec.float_keys
    for key, vals in example_values(spec, row).items():
        if key in float_keys:
            feature[key].float_list.value.extend(vals)
        else:
            feature[key].int64_list.value.extend(vals)
    return example.SerializeToString(deterministic=True)


def example_layout(spec: SpecView) -> tuple[tuple[str, bool, int], ...]:
    """``(key, is_float, values per row)`` of every stored key, in serialized (sorted) order.

    :attr:`FeatureSpec.example_layout` caches it; the encoders read it from there.
    """
    keys = [(label, True, 1) for label in spec.labels]
    for f in spec.features:
        keys.append((f.name, f.kind == "dense", f.max_length if f.kind == "sequence" else 1))
    keys += [(COHORT_KEY_PREFIX + a.name, False, 1) for a in spec.cohort_axes]
    return tuple(sorted(keys, key=lambda k: k[0].encode("utf-8")))


def example_columns(spec: SpecView, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Parsed rows as columns: key -> ``(N, values per row)`` array (float32 or int64).

    The values are :func:`example_values` of each row; the input of :func:`encode_examples`.
    """
    values = [example_values(spec, r) for r in rows]
    out = {}
    for key, is_float, width in spec.example_layout:
        dtype = np.float32 if is_float else np.int64
        out[key] = np.array([v[key] for v in values], dtype=dtype).reshape(len(rows), width)
    return out


def encode_examples(spec: SpecView, columns: Mapping[str, Any]) -> list[bytes]:
    """Serialized Examples of a batch of rows given as columns (see :func:`example_columns`).

    Byte-identical to ``[encode_example(row) for row in rows]``; built with array operations
    per key instead of per row (every record has the same keys and value counts).
    """
    flat, lengths = encode_examples_flat(spec, columns)
    data = flat.tobytes()
    out, pos = [], 0
    for n in lengths.tolist():
        out.append(data[pos:pos + n])
        pos += n
    return out


def encode_examples_flat(spec: SpecView, columns: Mapping[str, Any]):
    """:func:`encode_examples` as one ``uint8`` buffer of all records back to back and their lengths."""
    n = int(np.shape(columns[spec.label])[0])
    if n == 0:
        return np.zeros(0, np.uint8), np.zeros(0, np.int64)
    segments: list = []  # bytes (same for every row) or (matrix uint8 (N, w), mask bool (N, w) | None)
    features_len = 0
    for key, is_float, width in spec.example_layout:
        col = np.asarray(columns[key]).reshape(n, width)
        keyb = key.encode("utf-8")
        head = b"\n" + _varint(len(keyb)) + keyb + b"\x12"  # entry: key (1), value (2)
        if is_float:
            payload_len = 4 * width
            list_len = 1 + len(_varint(payload_len)) + payload_len
            feature_len = 1 + len(_varint(list_len)) + list_len
            entry_len = len(head) + len(_varint(feature_len)) + feature_len
            segments.append(b"\n" + _varint(entry_len) + head + _varint(feature_len) + b"\x12"
                            + _varint(list_len) + b"\n" + _varint(payload_len))
            segments.append((col.astype("<f4").view(np.uint8).reshape(n, payload_len), None))
            features_len = features_len + 1 + len(_varint(entry_len)) + entry_len
        else:
            payload, payload_mask, payload_len = _varint_columns(col.astype(np.int64))
            list_len = 1 + _varint_size(payload_len) + payload_len
            feature_len = 1 + _varint_size(list_len) + list_len
            entry_len = len(head) + _varint_size(feature_len) + feature_len
            segments.append(b"\n")
            segments.append(_varint_segment(entry_len))
            segments.append(head)
            segments.append(_varint_segment(feature_len))
            segments.append(b"\x1a")
            segments.append(_varint_segment(list_len))
            segments.append(b"\n")
            segments.append(_varint_segment(payload_len))
            segments.append((payload, payload_mask))
            features_len = features_len + 1 + _varint_size(entry_len) + entry_len
    features_len = np.broadcast_to(np.asarray(features_len, dtype=np.int64), (n,))
    segments = [b"\n", _varint_segment(features_len)] + segments
    return _assemble(segments, n)


def decode_examples(spec: SpecView, records: Sequence[bytes], keys: Sequence[str] | None = None
                    ) -> dict[str, np.ndarray]:
    """Serialized Examples written with ``spec`` as columns: key -> ``(N, values per row)`` array.

    float32 for float keys, int64 for int keys (the layout of :func:`example_columns`);
    ``keys`` restricts the decoding to some keys. Uses the Example wire schema (no TensorFlow).
    """
    layout = [(k, is_float, w) for k, is_float, w in spec.example_layout if keys is None or k in keys]
    missing = set(keys or ()) - {k for k, _, _ in layout}
    if missing:
        raise KeyError(f"spec '{spec.name}' stores no key(s) {sorted(missing)}")
    n = len(records)
    values: dict[str, list] = {k: [] for k, _, _ in layout}
    example = example_class()()
    for record in records:
        example.ParseFromString(record)
        feature = example.features.feature
        for k, is_float, _ in layout:
            f = feature[k]
            values[k].extend(f.float_list.value if is_float else f.int64_list.value)
    out = {}
    for k, is_float, w in layout:
        if len(values[k]) != n * w:
            raise ValueError(f"key '{k}': {len(values[k])} values in {n} records, expected {w} per record")
        out[k] = np.array(values[k], dtype=np.float32 if is_float else np.int64).reshape(n, w)
    return out


# ----- batched wire-format encoding (FeatureSpec.encode_examples) -----------------------------------
def _varint(value: int) -> bytes:
    """Protobuf varint of a non-negative int."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _varint_size(values):
    """Bytes of the varint of each non-negative length (array in, array out)."""
    size = np.ones(np.shape(values), dtype=np.int64)
    for k in range(1, 5):
        size += np.asarray(values) >= (1 << (7 * k))
    return size


def _varint_columns(col):
    """Varints of an ``(N, k)`` int64 array: ``(bytes (N, k*w) uint8, mask (N, k*w) | None, bytes per row)``.

    Negative values are 10-byte two's-complement varints, as protobuf writes int64.
    """
    n, k = col.shape
    u = np.ascontiguousarray(col, dtype=np.int64).view(np.uint64)
    sizes = np.ones(u.shape, dtype=np.int64)
    for j in range(1, 10):
        more = (u >> np.uint64(7 * j)) != 0
        if not more.any():
            break
        sizes += more
    w = int(sizes.max()) if sizes.size else 1
    groups = ((u[..., None] >> (np.arange(w, dtype=np.uint64) * np.uint64(7))) & np.uint64(0x7F)).astype(np.uint8)
    idx = np.arange(w)
    groups |= (idx < (sizes - 1)[..., None]).astype(np.uint8) << np.uint8(7)
    mask = None
    if int(sizes.min()) != w:
        mask = (idx < sizes[..., None]).reshape(n, k * w)
    return groups.reshape(n, k * w), mask, sizes.sum(axis=1)


def _varint_segment(values):
    """A per-row length as an assembly segment: constant bytes, or a varint matrix and mask."""
    values = np.asarray(values, dtype=np.int64)
    if values.ndim == 0:
        return _varint(int(values))
    if values.size and int(values.min()) == int(values.max()):
        return _varint(int(values[0]))
    mat, mask, _ = _varint_columns(values.reshape(-1, 1))
    return mat, mask


def _assemble(segments, n: int):
    """Concatenates per-row segments into one buffer: ``(flat uint8, lengths)``."""
    mats, masks, const = [], [], b""
    for seg in segments + [None]:
        if isinstance(seg, bytes):
            const += seg
            continue
        if const:
            mats.append(np.broadcast_to(np.frombuffer(const, dtype=np.uint8), (n, len(const))))
            masks.append(None)
            const = b""
        if seg is not None:
            mats.append(seg[0])
            masks.append(seg[1])
    matrix = np.concatenate(mats, axis=1)
    if all(m is None for m in masks):
        return matrix.reshape(-1), np.full(n, matrix.shape[1], dtype=np.int64)
    mask = np.concatenate([m if m is not None else np.ones(a.shape, dtype=bool) for a, m in zip(mats, masks)],
                          axis=1)
    return matrix[mask], mask.sum(axis=1)

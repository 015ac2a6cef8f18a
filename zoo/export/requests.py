"""Request features: checks against the spec, serialized examples, warm-up rows and PredictionLog records."""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from zoo.export.contract import EXAMPLES_INPUT, EXAMPLES_SIGNATURE, SIGNATURE, SIGNATURES, WARMUP_FILE, FeatureError
from zoo.spec import PAD_ID, FeatureSpec


def check_features(spec: FeatureSpec, features: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Validates a batch of request features against the spec; returns arrays in the spec dtypes.

    Every spec input must be present with shape ``(B,) + spec.input_shape(f)``; ids must be
    integers within int64 (a float id would be truncated silently by a cast, a larger unsigned one
    wrap around), dense values finite numbers. Raises :class:`FeatureError` naming the feature otherwise.
    """
    names = [f.name for f in spec.inputs]
    missing = [n for n in names if n not in features]
    if missing:
        raise FeatureError(f"feature '{missing[0]}': missing from the request "
                           f"(missing: {missing}; required inputs: {names})")
    unknown = sorted(set(features) - set(names))
    if unknown:
        raise FeatureError(f"feature '{unknown[0]}': not a serving input of spec '{spec.name}' "
                           f"(inputs: {names})")
    out, batch = {}, None
    for f in spec.inputs:
        value = np.asarray(features[f.name])
        want = spec.input_dtype(f)
        kinds = "fiu" if f.kind == "dense" else "iu"
        if value.dtype.kind not in kinds:
            raise FeatureError(f"feature '{f.name}': expected {want} values, got {value.dtype}")
        if value.dtype.kind == "u" and value.size and int(value.max()) > np.iinfo(np.int64).max:
            raise FeatureError(f"feature '{f.name}': id {int(value.max())} is outside int64")  # would wrap
        if f.kind == "dense" and not np.isfinite(value.astype(want)).all():
            raise FeatureError(f"feature '{f.name}': a NaN or infinite value (dense inputs must be finite)")
        shape = spec.input_shape(f)
        if value.ndim != 1 + len(shape) or tuple(value.shape[1:]) != shape:
            raise FeatureError(f"feature '{f.name}': expected shape (batch, {', '.join(map(str, shape))}), "
                               f"got {tuple(value.shape)}")
        if batch is None:
            batch = value.shape[0]
        elif value.shape[0] != batch:
            raise FeatureError(f"feature '{f.name}': batch size {value.shape[0]} differs from {batch}")
        out[f.name] = value.astype(want)
    return out


def serialize_examples(spec: FeatureSpec, features: Mapping[str, Any]) -> list[bytes]:
    """One serialized ``tf.train.Example`` per row with the spec's input features (deterministic bytes)."""
    from tensorflow.core.example import example_pb2

    checked = check_features(spec, features)
    rows = len(next(iter(checked.values())))
    out = []
    for i in range(rows):
        example = example_pb2.Example()
        feature = example.features.feature
        for f in spec.inputs:
            values = checked[f.name][i].tolist()
            target = feature[f.name].float_list if f.kind == "dense" else feature[f.name].int64_list
            target.value.extend(values)
        out.append(example.SerializeToString(deterministic=True))
    return out


def example_features(spec: FeatureSpec, rows: int = 2) -> dict[str, np.ndarray]:
    """Deterministic, valid placeholder rows from the spec alone (README request bodies, warm-up fallback)."""
    out = {}
    for f in spec.inputs:
        if f.kind == "dense":
            out[f.name] = np.array([[(0.5, -0.5, 1.0, -1.0)[r % 4]] for r in range(rows)], dtype="float32")
            continue
        owner = spec.feature(f.table)
        size = owner.vocab_size if owner.vocab_size is not None else owner.hash_buckets
        if f.kind == "categorical":
            out[f.name] = np.array([[(r + 1) % size] for r in range(rows)], dtype="int64")
        else:
            used = min(2, f.max_length)
            out[f.name] = np.array([[(r + 1 + j) % size for j in range(used)] + [PAD_ID] * (f.max_length - used)
                                    for r in range(rows)], dtype="int64")
    return out


def warmup_features(spec: FeatureSpec, eval_data: str | None = None, rows: int = 8,
                    split: str = "test") -> dict[str, np.ndarray]:
    """The first ``rows`` rows of an evaluation split (read with :func:`zoo.data.read_split`).

    Without ``eval_data`` the rows come from :func:`example_features` (valid ids and values, not
    real traffic).
    """
    if not eval_data:
        return example_features(spec, rows)
    from zoo import data

    ds = data.read_split(eval_data, split, rows, spec=spec).take(1)
    batch = next(iter(ds.as_numpy_iterator()), None)
    if batch is None:
        raise ValueError(f"warm-up: split '{split}' of {eval_data} has no rows")
    return check_features(spec, {f.name: batch[f.name] for f in spec.inputs})


def predict_request(spec: FeatureSpec, features: Mapping[str, Any], model_name: str,
                    signature: str = SIGNATURE):
    """A ``tensorflow_serving.apis.predict_pb2.PredictRequest`` for either signature."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if signature == SIGNATURE:
        for name, value in check_features(spec, features).items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    elif signature == EXAMPLES_SIGNATURE:
        examples = np.array(serialize_examples(spec, features), dtype=object)
        request.inputs[EXAMPLES_INPUT].CopyFrom(tf.make_tensor_proto(examples, dtype=tf.string))
    else:
        raise ValueError(f"signature '{signature}': must be one of {SIGNATURES}")
    return request


def write_warmup_requests(export_dir: str, spec: FeatureSpec, features: Mapping[str, Any],
                          model_name: str) -> str:
    """Writes ``assets.extra/tf_serving_warmup_requests``.

    Per signature, one request with every row and one with the first row.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    checked = check_features(spec, features)
    path = os.path.join(export_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature in SIGNATURES:
            for rows in (checked, {k: v[:1] for k, v in checked.items()}):
                log = prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(
                        request=predict_request(spec, rows, model_name, signature)))
                writer.write(log.SerializeToString())
    return path


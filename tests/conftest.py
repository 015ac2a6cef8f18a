"""Test configuration: the Keras backend defaults to TensorFlow; `make test` also runs the tests
marked `multi_backend` under JAX."""

import os
import sys
import textwrap

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from helpers import CLEAN_ROOM_PREAMBLE  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "multi_backend: layer/model tests run under TensorFlow and JAX")
    config.addinivalue_line("markers", "tf_only: needs the TensorFlow backend (export, tf.data)")


def pytest_collection_modifyitems(config, items):
    import keras

    if keras.backend.backend() == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"needs the TensorFlow backend; running {keras.backend.backend()}")
    for item in items:
        if "tf_only" in item.keywords:
            item.add_marker(skip)


# ---------------------------------------------------------------------------------------------------
# Beam writer / reader fixture (tests/test_beam_build_tfrecords.py, tests/test_reader.py): a tiny
# inline spec, its raw CSV files (12 good rows, one malformed row per dead-letter reason) and the
# values every good row must come out as, written by hand.
# ---------------------------------------------------------------------------------------------------
TINY_SPEC = {
    "name": "tiny",
    "label": "y",
    "user_id": "user",
    "split": {"train": 0.5, "valid": 0.25, "test": 0.25},
    "format": {"delimiter": ",", "header": True, "sequence_delimiter": " ",
               "columns": ["user", "item", "price", "discount", "hist", "tags", "value", "device", "y"]},
    "defaults": {"embedding_dim": 4},
    "features": [
        {"name": "user", "kind": "categorical", "vocab_size": 100},
        {"name": "item", "kind": "categorical", "vocab_size": 10},      # ids 0..9; 10 and 42 are OOV
        {"name": "price", "kind": "dense"},                              # blank -> missing_value
        {"name": "discount", "kind": "dense", "default": 0.5},           # blank -> 0.5
        {"name": "hist", "kind": "sequence", "max_length": 3, "share_embedding": "item"},  # keep_last
        {"name": "tags", "kind": "sequence", "max_length": 2, "hash_buckets": 7, "truncation": "error"},
        {"name": "value", "kind": "dense", "input": False},
        {"name": "device", "kind": "categorical", "vocab_size": 4},
    ],
    "cohort_axes": [
        {"name": "value_band", "feature": "value", "boundaries": [0.0, 1.0], "cohorts": ["low", "mid", "high"]},
        {"name": "device", "feature": "device", "values": {"desktop": [0], "mobile": [1], "tablet": [3]},
         "other": "other_device"},
    ],
    "c2al": {"axis": "value_band", "head": "high", "tail": "low"},
}
TINY_HEADER = "user,item,price,discount,hist,tags,value,device,y"
# Users 1, 4, 6, 7, 9, 10 hash to train, 14, 15, 26 to valid, 0, 2, 3 to test (0.5/0.25/0.25).
TINY_GOOD_A = [
    "1,3,1.5,0.25,2 4,1,-0.5,0,1",
    "4,42,2.0,,7,,0.5,1,0",
    "6,5,-1.25,0.75,11 2 3 4 5,6 0,1.5,2,1",
    "7,0,0.0,1.0,,2,0.0,0,0",
    "9,9,3.25,0.0,12 1,3 4,2.0,1,1",
    "10,1,0.5,0.5,0,,-2.0,0,0",
]
TINY_GOOD_B = [
    "14,2,1.0,0.25,3,5,0.25,1,1",
    "15,8,4.5,,9 9,1 1,-1.0,2,0",
    "26,4,2.5,0.125,5 6,0,1.0,0,0",
    "0,6,0.75,0.5,1,,0.75,1,1",
    "2,7,-0.5,0.0,,2 3,3.0,0,1",
    "3,10,1.25,1.0,4 4 4,,-0.25,2,0",
]
# (file, raw line bytes, reason)
TINY_BAD = [
    ("a.csv", b"1,3,1.5,0.25,2 4,1,-0.5,0", "wrong_column_count"),
    ("a.csv", b"4,3,abc,0.25,2,1,0.5,0,1", "bad_number"),
    ("a.csv", b"6,3,1.5,0.25,2,1,0.5,0,yes", "bad_label"),
    ("b.csv", b"14,3,,0.25,2,1,0.5,0,1", "missing_value"),
    ("b.csv", b"15,3,1.5,0.25,2,1 2 3,0.5,0,1", "sequence_too_long"),
    ("b.csv", b"26,1180591620717411303424,1.5,0.25,2,1,0.5,0,1", "bad_number"),    # id beyond int64
    ("b.csv", b"27,3,1.5,0.25,2 -1,1,0.5,0,1", "bad_number"),                       # -1 is the padding id
    ("b.csv", b"0,3,1.5,0.25,2,1,0.5,\xff,1", "bad_encoding"),                   # not UTF-8
]


def _tiny_row(y, user, item, price, discount, hist, tags, value, device, band, device_cohort):
    return {"y": (y,), "user": (user,), "item": (item,), "price": (price,), "discount": (discount,),
            "hist": hist, "tags": tags, "value": (value,), "device": (device,),
            "cohort/value_band": (band,), "cohort/device": (device_cohort,)}


# What each good row is stored as (floats for float_list keys, ints for int64_list keys):
# sequences padded with -1 (hist keeps the last 3 ids), blank discount -> 0.5, ids as given (OOV too),
# value_band: low 0 / mid 1 / high 2; device cohort: desktop 0 / mobile 1 / tablet 2 / other_device 3.
TINY_EXPECTED = {
    "train": [
        _tiny_row(1.0, 1, 3, 1.5, 0.25, (2, 4, -1), (1, -1), -0.5, 0, 0, 0),
        _tiny_row(0.0, 4, 42, 2.0, 0.5, (7, -1, -1), (-1, -1), 0.5, 1, 1, 1),
        _tiny_row(1.0, 6, 5, -1.25, 0.75, (3, 4, 5), (6, 0), 1.5, 2, 2, 3),
        _tiny_row(0.0, 7, 0, 0.0, 1.0, (-1, -1, -1), (2, -1), 0.0, 0, 1, 0),
        _tiny_row(1.0, 9, 9, 3.25, 0.0, (12, 1, -1), (3, 4), 2.0, 1, 2, 1),
        _tiny_row(0.0, 10, 1, 0.5, 0.5, (0, -1, -1), (-1, -1), -2.0, 0, 0, 0),
    ],
    "valid": [
        _tiny_row(1.0, 14, 2, 1.0, 0.25, (3, -1, -1), (5, -1), 0.25, 1, 1, 1),
        _tiny_row(0.0, 15, 8, 4.5, 0.5, (9, 9, -1), (1, 1), -1.0, 2, 0, 3),
        _tiny_row(0.0, 26, 4, 2.5, 0.125, (5, 6, -1), (0, -1), 1.0, 0, 2, 0),
    ],
    "test": [
        _tiny_row(1.0, 0, 6, 0.75, 0.5, (1, -1, -1), (-1, -1), 0.75, 1, 1, 1),
        _tiny_row(1.0, 2, 7, -0.5, 0.0, (-1, -1, -1), (2, 3), 3.0, 0, 2, 0),
        _tiny_row(0.0, 3, 10, 1.25, 1.0, (4, 4, 4), (-1, -1), -0.25, 2, 0, 3),
    ],
}
TINY_EXPECTED_STATS = {
    "dataset": "tiny",
    "rows": 12, "positives": 6, "base_rate": 0.5,
    "splits": {
        "train": {"rows": 6, "positives": 3, "base_rate": 0.5},
        "valid": {"rows": 3, "positives": 1, "base_rate": 1 / 3},
        "test": {"rows": 3, "positives": 2, "base_rate": 2 / 3},
    },
    "cohorts": {
        "value_band": {
            "low": {"rows": 4, "positives": 1, "base_rate": 0.25},
            "mid": {"rows": 4, "positives": 2, "base_rate": 0.5},
            "high": {"rows": 4, "positives": 3, "base_rate": 0.75},
        },
        "device": {
            "desktop": {"rows": 5, "positives": 2, "base_rate": 0.4},
            "mobile": {"rows": 4, "positives": 3, "base_rate": 0.75},
            "tablet": {"rows": 0, "positives": 0, "base_rate": None},
            "other_device": {"rows": 3, "positives": 1, "base_rate": 1 / 3},
        },
    },
    "features": {
        "user": {"kind": "categorical", "out_of_vocab": 0},
        "item": {"kind": "categorical", "out_of_vocab": 2},                # 42 and 10
        "hist": {"kind": "sequence", "out_of_vocab": 1, "truncated": 1},   # 12; 11 was truncated away
        "tags": {"kind": "sequence", "out_of_vocab": 0, "truncated": 0},   # hashed: never OOV
        "device": {"kind": "categorical", "out_of_vocab": 0},
    },
    "dead_letter": {"total": 8, "by_reason": {"bad_encoding": 1, "bad_label": 1, "bad_number": 3,
                                              "missing_value": 1, "sequence_too_long": 1,
                                              "wrong_column_count": 1}},
}


class TinyCase:
    """The tiny fixture: ``spec_dict``, ``spec``, ``raw_dir``, ``input_pattern`` and expectations."""

    spec_dict = TINY_SPEC
    expected = TINY_EXPECTED
    expected_stats = TINY_EXPECTED_STATS
    bad = TINY_BAD

    def __init__(self, raw_dir):
        from zoo.spec import FeatureSpec

        self.spec = FeatureSpec.from_dict(TINY_SPEC)
        self.raw_dir = str(raw_dir)
        self.input_pattern = os.path.join(self.raw_dir, "*.csv")
        good = {"a.csv": TINY_GOOD_A, "b.csv": TINY_GOOD_B}
        for name, lines in good.items():
            body = [line.encode() for line in lines] + [b for f, b, _ in TINY_BAD if f == name]
            with open(os.path.join(self.raw_dir, name), "wb") as fh:
                fh.write(b"\n".join([TINY_HEADER.encode()] + body) + b"\n")


@pytest.fixture(scope="session")
def tiny_case(tmp_path_factory):
    return TinyCase(tmp_path_factory.mktemp("tiny_raw"))


# ---------------------------------------------------------------------------------------------------
# SavedModel export session fixtures (tests/test_export.py, tests/test_serving.py): synthetic evaluation
# data, one C2AL model exported by the CLI (with a clean-room process and saved_model_cli started in the
# background) and a JAX training + export process, each built once per session.
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def eval_data(tmp_path_factory):
    """Synthetic rows written as the Beam job lays them out; the test split has >= 1000 rows."""
    from helpers import MIN_EVAL_ROWS, SYNTHETIC_SPEC_PATH, synthetic_rows, write_data_dir
    from zoo.spec import load_spec

    spec = load_spec(SYNTHETIC_SPEC_PATH)
    data_dir = str(tmp_path_factory.mktemp("export_data"))
    counts = write_data_dir(spec, synthetic_rows(11_000, seed=3), data_dir)
    assert counts["test"] >= MIN_EVAL_ROWS
    return data_dir


@pytest.fixture(scope="session")
def exported(request, tmp_path_factory, eval_data):
    """A C2AL model saved as .keras and exported by the CLI (spec.json + eval rows for warm-up).

    Starts the clean-room process and ``saved_model_cli show --all`` on the export in the background.
    """
    import keras

    from helpers import EXPORT_HP, Background, clean_env, eval_batch, inputs_of, keras_primary, raw_records
    from zoo import export
    from zoo.c2al import C2AL
    from zoo.model import build
    from zoo.spec import load_spec

    spec = load_spec(eval_data)
    keras.utils.set_random_seed(0)
    base = build("dcnv2", spec, **EXPORT_HP)
    model = C2AL(base)
    work = tmp_path_factory.mktemp("exported")
    keras_path = str(work / "model.keras")
    model.save(keras_path)
    root = str(work / "saved_models")
    assert export.main(["--model", keras_path, "--spec", eval_data, "--eval-data", eval_data,
                        "--export-root", root, "--model-name", "dcnv2_synthetic", "--warmup-rows", "5",
                        "--write-model-config"]) == 0
    path = os.path.join(root, "dcnv2_synthetic", "1")
    script = work / "clean_room.py"
    script.write_text(CLEAN_ROOM)
    clean_room = Background("clean_room", [sys.executable, str(script), path, eval_data, str(work / "clean_room.json")],
                            cwd=str(work), env=clean_env())
    saved_model_cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    cli = Background("saved_model_cli", [saved_model_cli, "show", "--dir", path, "--all"],
                     cwd=str(work), env=clean_env())
    batch = eval_batch(spec, eval_data)
    features = inputs_of(spec, batch)
    request.addfinalizer(clean_room.stop)
    request.addfinalizer(cli.stop)
    return {"spec": spec, "model": model, "base": base, "keras_path": keras_path, "root": root, "name": "dcnv2_synthetic", "path": path,
            "features": features, "expected": keras_primary(model, features), "records": raw_records(eval_data),
            "clean_room": clean_room, "clean_room_json": work / "clean_room.json", "saved_model_cli": cli}


@pytest.fixture(scope="session")
def jax_run(request, tmp_path_factory, eval_data):
    """Starts the JAX training + export process in the background (collected by the JAX test)."""
    import numpy as np

    from helpers import ROOT, Background, clean_env, eval_batch, inputs_of
    from zoo.spec import load_spec

    spec = load_spec(eval_data)
    work = tmp_path_factory.mktemp("jax")
    batch = eval_batch(spec, eval_data)
    np.savez(work / "inputs.npz", __label__=batch[spec.label], **inputs_of(spec, batch))
    (work / "jax_train.py").write_text(JAX_TRAIN)
    run = Background("jax_train", [sys.executable, str(work / "jax_train.py"), os.path.join(eval_data, "spec.json"),
                      str(work / "inputs.npz"), eval_data, str(work / "saved_models"), str(work / "out.json")],
                     cwd=str(work), env=clean_env(KERAS_BACKEND="jax", PYTHONPATH=ROOT))
    run.work = work
    request.addfinalizer(run.stop)
    return run


CLEAN_ROOM = CLEAN_ROOM_PREAMBLE + textwrap.dedent("""
    from tensorflow_serving.apis import prediction_log_pb2

    _, example_inputs = on_examples.structured_input_signature
    pred = default(**feats)["probability"].numpy()
    pred_examples = on_examples(examples=records)["probability"].numpy()

    # Replay the warm-up file the way TF Serving does when it loads the model.
    warmup = []
    for raw in tf.data.TFRecordDataset(export_dir + "/assets.extra/tf_serving_warmup_requests"):
        log = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
        request = log.predict_log.request
        arrays = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        out = loaded.signatures[request.model_spec.signature_name](**{k: tf.constant(v) for k, v in arrays.items()})
        warmup.append({"log_type": log.WhichOneof("log_type"), "model": request.model_spec.name,
                       "signature": request.model_spec.signature_name,
                       "inputs": {k: [tf.as_dtype(v.dtype).name, list(v.shape)] for k, v in arrays.items()},
                       "rows": int(out["probability"].shape[0])})

    # Bad requests: the error must name the feature.
    numpy_feats = {k: v.numpy() for k, v in feats.items()}
    def error_of(call):
        try:
            call()
        except Exception as e:
            return type(e).__name__ + ": " + str(e)
    first = records.numpy()[0]
    example = tf.train.Example.FromString(first)
    del example.features.feature["price"]
    wrong = tf.train.Example.FromString(first)
    wrong.features.feature["item_id"].Clear()
    wrong.features.feature["item_id"].float_list.value.append(3.0)
    errors = {
        "missing": error_of(lambda: default(**{k: v for k, v in feats.items() if k != "price"})),
        "mistyped": error_of(lambda: default(**{**numpy_feats,
                                                "item_id": tf.constant(numpy_feats["item_id"], tf.float32)})),
        "wrong_shape": error_of(lambda: default(**{**numpy_feats,
                                                   "recent_categories": numpy_feats["recent_categories"][:, :3]})),
        "example_missing": error_of(lambda: on_examples(examples=tf.constant([first, example.SerializeToString()]))),
        "example_mistyped": error_of(lambda: on_examples(examples=tf.constant([wrong.SerializeToString()]))),
    }
    banned = [m for m in sys.modules if m.split(".")[0] in ("zoo", "layers", "beam_jobs", "helpers")]
    json.dump({
        "signatures": sorted(loaded.signatures),
        "pred": pred.ravel().tolist(),
        "pred_examples": pred_examples.ravel().tolist(),
        "inputs": {k: [s.dtype.name, list(s.shape)] for k, s in inputs.items()},
        "example_inputs": {k: [s.dtype.name, list(s.shape)] for k, s in example_inputs.items()},
        "outputs": {name: {k: [s.dtype.name, list(s.shape)] for k, s in fn.structured_outputs.items()}
                    for name, fn in loaded.signatures.items()},
        "params": int(sum(np.prod(v.shape) for v in loaded.variables)),
        "warmup": warmup,
        "errors": errors,
        "project_modules": banned,
    }, open(out_json, "w"))
""")


JAX_TRAIN = textwrap.dedent("""
    import json, sys
    import numpy as np
    import keras
    from zoo.c2al import C2AL
    from zoo.export import export_saved_model
    from zoo.model import PRIMARY, build
    from zoo.spec import load_spec

    spec_path, inputs_npz, data_dir, export_root, out_json = sys.argv[1:6]
    spec = load_spec(spec_path)
    arrays = dict(np.load(inputs_npz))
    x = {f.name: arrays[f.name] for f in spec.inputs}
    y = arrays["__label__"]
    keras.utils.set_random_seed(0)
    model = C2AL(build("dcnv2", spec, num_cross_layers=1, dnn_units=[8]))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy")
    n = len(y) // 512 * 512  # whole batches: one compiled train step
    history = model.fit({k: v[:n] for k, v in x.items()}, {PRIMARY: y[:n], "aux_head": y[:n] * 0, "aux_tail": y[:n]},
                        epochs=1, batch_size=512, verbose=0)
    pred = np.asarray(model.predict(x, batch_size=len(y), verbose=0)[PRIMARY]).ravel()
    path = export_saved_model(model, spec, export_root, "jax_trained", eval_data=data_dir)
    json.dump({"backend": keras.backend.backend(), "path": path, "pred": pred.tolist(),
               "loss": history.history["loss"]},
              open(out_json, "w"))
""")

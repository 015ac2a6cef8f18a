"""Test configuration: the Keras backend defaults to TensorFlow; `make test` also runs the tests
marked `multi_backend` under JAX."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


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

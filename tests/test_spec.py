"""The feature spec: validation errors, raw-row parsing, cohorts, split, and every derived view."""

import copy

import pytest
import tensorflow as tf

from zoo.spec import PAD_ID, FeatureSpec, RowError, SpecError, load_spec, stable_hash

BASE = {
    "name": "toy",
    "label": "click",
    "user_id": "user",
    "format": {"columns": ["click", "user", "item", "price", "hist"], "delimiter": ","},
    "defaults": {"embedding_dim": 4},
    "features": [
        {"name": "user", "kind": "categorical", "vocab_size": 10},
        {"name": "item", "kind": "categorical", "hash_buckets": 7, "embedding_dim": 3},
        {"name": "price", "kind": "dense", "default": 0.5},
        {"name": "hist", "kind": "sequence", "max_length": 3, "share_embedding": "item"},
    ],
    "cohort_axes": [
        {"name": "value", "feature": "price", "boundaries": [0.0, 1.0], "cohorts": ["low", "mid", "high"]},
        {"name": "seg", "feature": "user", "values": {"a": [0, 1], "b": [2]}, "other": "rest"},
    ],
    "c2al": {"axis": "value", "head": "high", "tail": "low"},
}


def spec_with(**changes):
    """BASE with top-level keys replaced (``None`` removes one)."""
    raw = copy.deepcopy(BASE)
    raw.update(changes)
    return {k: v for k, v in raw.items() if v is not None}


def feature_with(index, **changes):
    raw = copy.deepcopy(BASE)
    raw["features"][index].update(changes)
    for key, value in list(raw["features"][index].items()):
        if value is None:
            del raw["features"][index][key]
    return raw


@pytest.mark.parametrize("raw, message", [
    (feature_with(0, kind="embedding"), "feature 'user': kind must be one of"),
    (feature_with(0, vocab_size=None), "feature 'user': give exactly one of vocab_size or hash_buckets"),
    (feature_with(0, hash_buckets=5), "feature 'user': give exactly one of vocab_size or hash_buckets"),
    (feature_with(0, vocab_size=0), "feature 'user': vocab_size/hash_buckets must be a positive integer"),
    (feature_with(0, vocab_size=10.5), "feature 'user': vocab_size/hash_buckets must be a positive integer"),
    (feature_with(0, colour="red"), "feature 'user': unknown key(s) ['colour']"),
    (feature_with(0, max_length=3), "feature 'user': max_length/truncation apply only to sequence features"),
    (feature_with(1, embedding_dim=-2), "feature 'item': embedding_dim must be a positive integer"),
    (feature_with(2, vocab_size=3), "feature 'price': 'vocab_size' does not apply to a dense feature"),
    (feature_with(2, default="zero"), "feature 'price': default must be a number"),
    (feature_with(3, max_length=0), "feature 'hist': sequence features need a positive integer max_length"),
    (feature_with(3, truncation="drop"), "feature 'hist': truncation must be one of"),
    (feature_with(3, share_embedding="price"), "feature 'hist': share_embedding 'price' is not a declared"),
    (feature_with(3, vocab_size=4), "feature 'hist': share_embedding takes size and dim from 'item'"),
    (feature_with(1, name="user"), "feature 'user': declared twice"),
    (feature_with(1, name="click"), "feature 'click': has the same name as the label"),
    (feature_with(1, name="bad name"), "feature 'bad name': names must be letters, digits and underscores"),
    (spec_with(user_id="price"), "user_id 'price': must name a declared categorical feature"),
    (spec_with(format={"columns": ["click", "user", "item", "price"]}), "format.columns: missing column(s) ['hist']"),
    (spec_with(split={"train": 0.9, "test": 0.1}), "split: needs fractions for exactly"),
    (spec_with(split={"train": 0.5, "valid": 0.1, "test": 0.1}), "split: fractions must sum to 1"),
    (spec_with(cohort_axes=[{"name": "v", "feature": "price", "boundaries": [1.0, 0.0]}]),
     "cohort axis 'v': boundaries must be non-empty and strictly increasing"),
    (spec_with(cohort_axes=[{"name": "v", "feature": "price", "boundaries": [0.0], "cohorts": ["a"]}]),
     "cohort axis 'v': needs 2 distinct cohort names"),
    (spec_with(cohort_axes=[{"name": "v", "feature": "hist", "boundaries": [0.0]}]),
     "cohort axis 'v': feature 'hist' is not a declared categorical or dense feature"),
    (spec_with(cohort_axes=[{"name": "v", "feature": "price", "values": {"a": [1]}}]),
     "cohort axis 'v': 'values' needs a categorical feature"),
    (spec_with(cohort_axes=[{"name": "v", "feature": "user", "values": {"a": [1], "b": [1]}}]),
     "cohort axis 'v': id 1 is in both 'a' and 'b'"),
    (spec_with(c2al={"axis": "value", "head": "top", "tail": "low"}), "cohort axis 'value': no cohort named 'top'"),
    (spec_with(c2al={"axis": "nope", "head": "high", "tail": "low"}), "cohort axis 'nope': not declared"),
    (spec_with(c2al={"axis": "value", "head": "low", "tail": "low"}), "c2al: head and tail must be different"),
    (spec_with(colour="red"), "spec: unknown top-level key(s) ['colour']"),
    (spec_with(oracle="p_true"), "oracle 'p_true': must name a declared feature"),
    (spec_with(oracle="item"), "oracle 'item': must be a dense feature, got kind categorical"),
    (spec_with(oracle="price"), "oracle 'price': must have input: false"),
    (spec_with(label={"column": "stars"}), "label 'stars': give exactly one of 'positive'"),
    (spec_with(label={"column": "click", "positive": ">= 4", "map": {"a": 1}}), "label 'click': give exactly one of"),
    (spec_with(label={"column": "click", "positive": "at least 4"}),
     "label 'click': positive must be a comparison and a number"),
    (spec_with(label={"column": "click", "positive": "=> 4"}), "label 'click': positive must be a comparison"),
    (spec_with(label={"column": "click", "positive": ">= nan"}), "label 'click': positive must be a comparison"),
    (spec_with(label={"column": "click", "map": {True: 1, "no": 0}}), "label 'click': map key True is a YAML boolean"),
    (spec_with(label={"column": "click", "map": {"yes": 2}}), "label 'click': map value of 'yes' must be 0 or 1"),
    (spec_with(label={"column": "click", "map": {"no": 0}}), "label 'click': map has no value mapped to 1"),
    (spec_with(label={"column": "click", "positive": "> 3", "colour": 1}), "label 'click': unknown key(s) ['colour']"),
    (spec_with(label={"name": "liked", "column": "stars", "positive": "> 3"}),
     "label 'liked': column 'stars' is not a column of format.columns"),
    (spec_with(label={"name": "liked", "column": "price", "positive": "> 3"}),
     "label 'liked': column 'price' is also a feature"),
    (spec_with(label=None, labels=[{"name": "a", "column": "click", "positive": "> 3"},
                                   {"name": "b", "column": "click", "positive": "> 4"}]),
     "label column 'click': read by two labels"),
    (spec_with(format={"columns": ["click", "user", "item", "price", "hist"], "quote": ","}),
     "format.quote: must be one character other than the delimiter"),
    (spec_with(format={"columns": ["click", "user", "item", "price", "hist"], "quote": "''"}),
     "format.quote: must be one character"),
    (spec_with(format={"columns": ["click", "user", "item", "price", "hist"], "quote": None, "multiline": True}),
     "format.multiline: true needs a quote character"),
    (spec_with(format={"columns": ["click", "user", "item", "price", "hist"], "multiline": "yes"}),
     "format.multiline: must be true or false"),
    ({"name": "fm", "label": "y", "split_by": "line", "features": [{"name": "a", "kind": "categorical", "vocab_size": 5, "embedding_dim": 2}],
      "format": {"columns": ["y", "a"], "type": "libfm", "quote": '"'}},
     "format: ['quote'] apply to delimited files, not format.type libfm"),
])
def test_malformed_spec_names_feature_and_problem(raw, message):
    with pytest.raises(SpecError) as err:
        FeatureSpec.from_dict(raw)
    assert message in str(err.value)


def test_label_rules_derive_the_label_and_round_trip():
    import yaml

    spec = FeatureSpec.from_dict(spec_with(label={"name": "liked", "column": "click", "positive": "> 3.5"}))
    assert spec.label == "liked" and spec.labels == ("liked",) and spec.label_column("liked") == "click"
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict()["label"] == {"name": "liked", "column": "click", "positive": "> 3.5"}
    assert [spec.parse_raw_row(f"{t},1,2,0.5,".split(","))["liked"] for t in ("3.5", "3.6", "5", " 1 ")] == [0, 1, 1, 0]
    with pytest.raises(RowError) as err:
        spec.parse_raw_row("four,1,2,0.5,".split(","))
    assert err.value.reason == "bad_label" and "label 'liked': cannot parse 'four'" in str(err.value)
    mapped = FeatureSpec.from_dict(spec_with(label={"column": "click", "map": yaml.safe_load('{"yes": 1, "no": 0, 7: 1}')}))
    assert mapped.label == "click" and FeatureSpec.from_dict(mapped.to_dict()) == mapped
    assert [mapped.parse_raw_row(f"{t},1,2,0.5,".split(","))["click"] for t in ("yes", " no ", "7")] == [1, 0, 1]
    with pytest.raises(RowError) as err:
        mapped.parse_raw_row("Yes,1,2,0.5,".split(","))
    assert err.value.reason == "unmapped_label" and "column 'click' value 'Yes' is not in its map" in str(err.value)
    # a multi-task list mixes plain 0/1 columns and rules
    multi = FeatureSpec.from_dict(spec_with(
        label=None, labels=["click", {"name": "long_view", "column": "secs", "positive": ">= 30"}],
        format={"columns": ["click", "user", "item", "price", "hist", "secs"], "delimiter": ","}))
    assert multi.labels == ("click", "long_view") and FeatureSpec.from_dict(multi.to_dict()) == multi
    row = multi.parse_raw_row("1,1,2,0.5,,45".split(","))
    assert (row["click"], row["long_view"]) == (1.0, 1.0)


def test_load_spec_prefixes_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nlabel: y\nfeatures: []\n")
    with pytest.raises(SpecError, match=r"bad\.yaml: spec: 'features' is empty"):
        load_spec(path)


def test_resolved_spec_round_trips():
    spec = FeatureSpec.from_dict(BASE)
    again = FeatureSpec.from_dict(spec.to_dict())
    assert again == spec
    assert spec.feature("hist").vocab_size is None and spec.feature("hist").hash_buckets == 7
    assert spec.feature("hist").table == "item"
    assert spec.feature("user").num_rows == 11 and spec.feature("user").oov_row == 10
    assert spec.feature("item").num_rows == 7 and spec.feature("item").oov_row is None
    assert list(spec.tables) == ["user", "item"]


def test_parse_raw_row_values_and_errors():
    spec = FeatureSpec.from_dict(BASE)
    row = spec.parse_raw_row(["1", "3", "12", "", "4 5 6 7"])
    assert row == {"click": 1.0, "user": 3, "item": 12, "price": 0.5, "hist": [4, 5, 6, 7]}
    cases = [
        (["1", "3", "12", "0.1"], "wrong_column_count", "expected 5 columns"),
        (["x", "3", "12", "0.1", ""], "bad_label", "label 'click': cannot parse 'x'"),
        (["2", "3", "12", "0.1", ""], "bad_label", "label 'click': '2' is not 0 or 1"),
        (["1", "", "12", "0.1", ""], "missing_value", "feature 'user': blank id"),
        (["1", "3.5", "12", "0.1", ""], "bad_number", "feature 'user': cannot parse '3.5'"),
        (["1", "3", "12", "abc", ""], "bad_number", "feature 'price': cannot parse 'abc'"),
        (["1", "3", "12", "nan", ""], "bad_number", "feature 'price': 'nan' is not finite"),
        (["1", "3", "12", "0.1", "4 x"], "bad_number", "feature 'hist': cannot parse 'x'"),
        (["1", "3", "12", "0.1", "4 -1"], "bad_number", "feature 'hist': id -1 is reserved for sequence padding"),
        (["1", str(2**63), "12", "0.1", ""], "bad_number", f"feature 'user': id {2**63} is outside int64"),
        (["1", "3", "12", "1e39", ""], "bad_number", "feature 'price': '1e39' overflows float32"),
    ]
    for fields, reason, message in cases:
        with pytest.raises(RowError) as err:
            spec.parse_raw_row(fields)
        assert err.value.reason == reason and message in str(err.value)


def test_truncation_policies():
    spec = FeatureSpec.from_dict(BASE)
    feat = spec.feature("hist")
    assert spec.pad_sequence(feat, [4, 5, 6, 7]) == ([5, 6, 7], True)
    assert spec.pad_sequence(feat, [4]) == ([4, PAD_ID, PAD_ID], False)
    first = FeatureSpec.from_dict(feature_with(3, truncation="keep_first"))
    assert first.pad_sequence(first.feature("hist"), [4, 5, 6, 7]) == ([4, 5, 6], True)
    strict = FeatureSpec.from_dict(feature_with(3, truncation="error"))
    with pytest.raises(RowError) as err:
        strict.parse_raw_row(["1", "3", "12", "0.1", "1 2 3 4"])
    assert err.value.reason == "sequence_too_long" and "feature 'hist'" in str(err.value)


def test_cohort_ids_ordinal_and_categorical():
    spec = FeatureSpec.from_dict(BASE)
    ids = [spec.cohort_ids({"price": p, "user": u}) for p, u in [(-1, 0), (0.0, 1), (0.99, 2), (1.0, 3), (5, 99)]]
    assert ids == [
        {"value": 0, "seg": 0}, {"value": 1, "seg": 0}, {"value": 1, "seg": 1},
        {"value": 2, "seg": 2}, {"value": 2, "seg": 2},
    ]
    assert spec.axis("seg").cohorts == ("a", "b", "rest")


def test_split_is_a_stable_user_hash():
    spec = FeatureSpec.from_dict(BASE)
    # SplitMix64 known answers (reference values of the published algorithm, seed state 0 and 1).
    assert stable_hash(0) == 0xE220A8397B1DCDAF
    assert stable_hash(1) == 0x910A2DEC89025CC1
    splits = [spec.split_of({"user": u}) for u in range(20_000)]
    fractions = {s: splits.count(s) / len(splits) for s in ("train", "valid", "test")}
    assert abs(fractions["train"] - 0.8) < 0.01 and abs(fractions["valid"] - 0.1) < 0.01
    assert all(spec.split_of({"user": u}) == splits[u] for u in range(0, 20_000, 997))
    given = FeatureSpec.from_dict(spec_with(format={"columns": BASE["format"]["columns"] + ["s"], "split_column": "s"}))
    assert given.parse_raw_row(["1", "3", "12", "0.1", "", "valid"])["__split__"] == "valid"
    with pytest.raises(RowError, match="column 's': 'dev' is not one of"):
        given.parse_raw_row(["1", "3", "12", "0.1", "", "dev"])


def test_example_encoding_matches_parse_spec():
    spec = FeatureSpec.from_dict(BASE)
    row = spec.parse_raw_row(["1", "42", "-3", "2.5", "4 5"])
    serialized = spec.encode_example(row)
    example = tf.train.Example.FromString(serialized)
    feats = example.features.feature
    assert sorted(feats) == ["click", "cohort/seg", "cohort/value", "hist", "item", "price", "user"]
    assert list(feats["user"].int64_list.value) == [42]  # stored as given; the model maps OOV
    assert list(feats["hist"].int64_list.value) == [4, 5, PAD_ID]
    assert list(feats["cohort/value"].int64_list.value) == [2]
    assert list(feats["cohort/seg"].int64_list.value) == [2]
    parsed = tf.io.parse_example([serialized], spec.parse_spec("all"))
    assert parsed["price"].numpy().tolist() == [[2.5]] and parsed["click"].numpy().tolist() == [[1.0]]
    assert parsed["hist"].numpy().tolist() == [[4, 5, PAD_ID]] and parsed["item"].numpy().tolist() == [[-3]]
    assert set(spec.parse_spec("inputs")) == {"user", "item", "price", "hist"}


def test_model_and_serving_views_share_names_dtypes_shapes():
    spec = FeatureSpec.from_dict(feature_with(2, input=False))
    inputs = spec.keras_inputs()
    signature = spec.serving_signature()
    assert list(inputs) == list(signature) == ["user", "item", "hist"]  # price is carried, not served
    for name, tensor in inputs.items():
        assert tensor.name == name == signature[name].name
        assert tuple(tensor.shape) == tuple(signature[name].shape) == ((None, 3) if name == "hist" else (None, 1))
        assert str(tensor.dtype) == signature[name].dtype.name == "int64"


def test_oracle_is_a_carried_dense_column_that_round_trips():
    import json

    raw = copy.deepcopy(BASE)
    raw["format"]["columns"].append("truth")
    raw["features"].append({"name": "truth", "kind": "dense", "input": False})
    spec = FeatureSpec.from_dict({**raw, "oracle": "truth"})
    assert spec.oracle == "truth" and "truth" not in [f.name for f in spec.inputs]
    assert spec.to_dict()["oracle"] == "truth" and FeatureSpec.from_dict(spec.to_dict()) == spec
    assert FeatureSpec.from_dict(json.loads(spec.to_json())) == spec  # spec.json
    assert FeatureSpec.from_dict(raw).oracle is None and "oracle" not in FeatureSpec.from_dict(raw).to_dict()
    with pytest.raises(SpecError, match="oracle 'truth': takes no transforms or default"):
        raw["features"][-1]["default"] = 0.0
        FeatureSpec.from_dict({**raw, "oracle": "truth"})


def test_shipped_synthetic_spec_loads():
    spec = load_spec("configs/datasets/synthetic.yaml")
    assert spec.oracle == "p_true" and not spec.feature("p_true").input
    assert spec.c2al["head"] == "p95_100" and spec.c2al["tail"] == "p00_05"
    assert spec.axis("user_value").cohorts[0] == "p00_05"


def test_package_api_is_lazy():
    import subprocess
    import sys

    code = "import sys, zoo, zoo.spec; print('keras' in sys.modules, 'tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]  # Beam workers import zoo.spec without Keras
    import zoo
    from zoo.c2al import C2AL
    from zoo.model import build

    assert zoo.build is build and zoo.C2AL is C2AL and zoo.load_spec is load_spec
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        zoo.nope


def test_raw_types_vocabularies_and_transforms_round_trip_and_parse():
    from zoo.spec import hash_token

    raw = spec_with(
        format={"columns": ["click", "user", "item", "price", "hist", "city", "hx"], "delimiter": ","},
        features=BASE["features"] + [
            {"name": "city", "kind": "categorical", "raw_type": "string", "vocabulary": {"min_count": 3}},
            {"name": "hx", "kind": "categorical", "raw_type": "hex", "hash_buckets": 9, "embedding_dim": 2},
        ])
    raw["features"][2] = {"name": "price", "kind": "dense", "default": 0.5,
                          "transforms": [{"clip": [0, None]}, "log1p"]}
    spec = FeatureSpec.from_dict(raw)
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict()["features"][2]["transforms"] == [{"clip": [0.0, None]}, "log1p"]
    assert spec.needs_vocabularies and list(spec.vocabulary_tables) == ["city"]
    # Without vocabularies the vocabulary feature keeps its token; with them it gets ids (OOV = vocab_size).
    row = spec.parse_raw_row(["1", "3", "12", "-4", "", " Paris ", "AbC"])
    assert row["city"] == "Paris" and row["hx"] == hash_token("abc") % 9 and row["price"] == 0.0
    resolved = spec.with_vocabularies({"city": (2, "vocab/city.txt")})
    assert resolved.feature("city").vocab_size == 2 and not resolved.needs_vocabularies
    vocabs = {"city": {"Paris": 0, "Oslo": 1}}
    assert resolved.parse_raw_row(["1", "3", "12", "3", "", "Rome", ""], vocabs)["city"] == 2
    assert resolved.parse_raw_row(["1", "3", "12", "3", "", "Oslo", ""], vocabs)["price"] == pytest.approx(1.3862943611198906)
    with pytest.raises(RowError, match="'xyz' is not hexadecimal") as err:
        resolved.parse_raw_row(["1", "3", "12", "3", "", "Oslo", "xyz"], vocabs)
    assert err.value.reason == "bad_number"
    strict = FeatureSpec.from_dict({**resolved.to_dict(), "features": [
        {**f, "unknown": "error"} if f["name"] == "city" else f for f in resolved.to_dict()["features"]]})
    with pytest.raises(RowError) as err:
        strict.parse_raw_row(["1", "3", "12", "3", "", "Rome", ""], vocabs)
    assert err.value.reason == "unknown_category" and "'Rome' is not in the vocabulary" in str(err.value)


def test_encode_example_is_deterministic_across_processes():
    import subprocess
    import sys

    code = ("from zoo.spec import load_spec; s = load_spec('configs/datasets/synthetic.yaml'); "
            "r = s.parse_raw_row('1,2,3,4,5,6,1,0.5,0.25,1.2,1 2 3,1,0.3'.split(',')); print(s.encode_example(r).hex())")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(seed), "PATH": ""}).stdout for seed in (1, 2)}
    assert len(outs) == 1  # map keys are serialized sorted, not in hash-table order


# ----- load_spec: every form of spec path ------------------------------------------------------------
def test_load_spec_reads_a_yaml_a_spec_json_and_a_data_directory(tmp_path):
    import json

    from zoo.spec import locate_spec_file

    from_yaml = load_spec("configs/datasets/synthetic.yaml")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "spec.json").write_text(from_yaml.to_json())
    assert load_spec(data_dir / "spec.json") == from_yaml
    assert load_spec(str(data_dir)) == from_yaml
    assert locate_spec_file(data_dir) == str(data_dir / "spec.json")
    (tmp_path / "bad.json").write_text(json.dumps({**from_yaml.to_dict(), "features": []}))
    with pytest.raises(SpecError, match=r"bad\.json: spec: 'features' is empty"):
        load_spec(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(SpecError, match=r"broken\.json: not valid JSON"):
        load_spec(tmp_path / "broken.json")


def test_load_spec_names_the_path_it_cannot_read(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: data directory has no spec\.json"):
        load_spec(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml: no such spec file or data directory"):
        load_spec(tmp_path / "nope.yaml")


def test_load_spec_reads_remote_paths_through_beam_filesystems(monkeypatch):
    import io

    from apache_beam.io import filesystems

    spec = load_spec("configs/datasets/synthetic.yaml")
    store = {"mem://bucket/data/spec.json": spec.to_json().encode("utf-8"),
             "mem://bucket/synthetic.yaml": open("configs/datasets/synthetic.yaml", "rb").read()}

    class InMemoryFileSystems:  # the three FileSystems calls load_spec makes on a remote path
        exists = staticmethod(store.__contains__)
        join = staticmethod(lambda base, name: f"{base.rstrip('/')}/{name}")
        open = staticmethod(lambda path: io.BytesIO(store[path]))

    monkeypatch.setattr(filesystems, "FileSystems", InMemoryFileSystems)
    assert load_spec("mem://bucket/synthetic.yaml") == spec
    assert load_spec("mem://bucket/data/spec.json") == spec
    assert load_spec("mem://bucket/data") == spec
    with pytest.raises(FileNotFoundError, match="mem://bucket/other: no spec file there, and no spec.json"):
        load_spec("mem://bucket/other")

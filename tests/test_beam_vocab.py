"""Two-pass ingest: vocabularies (min_count, OOV id, a table shared by two features), hashed string
and hex ids, dense transforms, unknown_category dead letters; rows -> TFRecords -> reader -> values.

The fixture below is small enough to follow by hand; every expected value is written out.
"""

from __future__ import annotations

import collections
import glob
import json
import math
import os

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_jobs import build_tfrecords, fileio
from zoo.spec import SPLITS, FeatureSpec, SpecError, hash_token, load_spec

pytestmark = pytest.mark.tf_only

SPEC = {
    "name": "vocab_case",
    "label": "y",
    "user_id": "u",
    "format": {"delimiter": ",", "header": True, "split_column": "fold",
               "columns": ["y", "u", "city", "tags", "hx", "price", "strict", "fold"]},
    "defaults": {"embedding_dim": 4},
    "features": [
        {"name": "u", "kind": "categorical", "vocab_size": 10},
        # One vocabulary for the table 'city', counted over city and tags; tokens seen >= 2 times in train.
        {"name": "city", "kind": "categorical", "raw_type": "string", "vocabulary": {"min_count": 2}},
        {"name": "tags", "kind": "sequence", "max_length": 3, "share_embedding": "city"},
        {"name": "hx", "kind": "categorical", "raw_type": "hex", "hash_buckets": 5},
        {"name": "price", "kind": "dense", "default": 0.0, "transforms": [{"clip": [0, None]}, "log1p"]},
        {"name": "strict", "kind": "categorical", "raw_type": "string", "vocabulary": {"min_count": 2},
         "unknown": "error"},
    ],
    "cohort_axes": [{"name": "price_band", "feature": "price", "boundaries": [1.0], "cohorts": ["cheap", "dear"]}],
}
HEADER = "y,u,city,tags,hx,price,strict,fold"
ROWS = [
    "1,1,paris,rome oslo,AB,3,red,train",
    "0,2,paris,,ab,-2,red,train",
    "1,3,rome,paris,ff,,blue,train",
    "0,4,oslo,,,0,blue,train",
    "1,5,paris,rome,1f,8,red,train",
    "0,6,lima,lima,AB,1.5,green,train",          # strict 'green' is seen once: unknown_category
    "1,7,rome,paris paris,ab,2,red,valid",
    "0,8,tokyo,tokyo,cd,,blue,valid",            # tokyo never in train: the OOV id 3
    "1,9,paris,oslo,zz,1,red,test",              # 'zz' is not hex: bad_number
    "0,0,oslo,oslo rome lima paris,00,4,red,test",  # keep_last 3 -> rome lima paris
]
# Train tokens of table city (city + tags): paris 3+1, rome 1+2, oslo 1+1, lima 1+1 -> lima too (2)?
# No: row 6 counts too in the vocabulary pass (its strict value only fails when encoding), so
# lima = city 1 + tags 1 = 2 is kept. Order: count desc, then token.
CITY_VOCAB = ["paris", "rome", "lima", "oslo"]  # paris 4, rome 3, lima 2, oslo 2
STRICT_VOCAB = ["red", "blue"]                  # red 3, blue 2 (green 1: dropped)
CITY_SUMMARY = {"vocab_size": 4, "min_count": 2, "max_size": None, "splits": ["train"], "distinct_tokens": 4,
                "occurrences": 11, "covered_occurrences": 11}
STRICT_SUMMARY = {"vocab_size": 2, "min_count": 2, "max_size": None, "splits": ["train"], "distinct_tokens": 3,
                  "occurrences": 6, "covered_occurrences": 5}


def _h(token: str) -> int:
    return hash_token(token) % 5


def _row(y, u, city, tags, hx, price, strict, band):
    return {"y": (y,), "u": (u,), "city": (city,), "tags": tags, "hx": (_h(hx),), "price": (price,),
            "strict": (strict,), "cohort/price_band": (band,)}


EXPECTED = {
    "train": [
        _row(1.0, 1, 0, (1, 3, -1), "ab", math.log1p(3), 0, 1),
        _row(0.0, 2, 0, (-1, -1, -1), "ab", 0.0, 0, 0),
        _row(1.0, 3, 1, (0, -1, -1), "ff", 0.0, 1, 0),
        _row(0.0, 4, 3, (-1, -1, -1), "", 0.0, 1, 0),
        _row(1.0, 5, 0, (1, -1, -1), "1f", math.log1p(8), 0, 1),
    ],
    "valid": [
        _row(1.0, 7, 1, (0, 0, -1), "ab", math.log1p(2), 0, 1),
        _row(0.0, 8, 4, (4, -1, -1), "cd", 0.0, 1, 0),
    ],
    "test": [
        _row(0.0, 0, 3, (1, 2, 0), "00", math.log1p(4), 0, 1),
    ],
}
EXPECTED_DEAD = [("0,6,lima,lima,AB,1.5,green,train", "unknown_category",
                  "feature 'strict': 'green' is not in the vocabulary of table 'strict' (2 tokens)"),
                 ("1,9,paris,oslo,zz,1,red,test", "bad_number", "feature 'hx': 'zz' is not hexadecimal")]


def _canonical(row: dict) -> tuple:
    import numpy as np

    out = []
    for k, v in row.items():
        if isinstance(v[0], float):
            out.append((k, "float_list", tuple(float(np.float32(x)) for x in v)))
        else:
            out.append((k, "int64_list", tuple(v)))
    return tuple(sorted(out))


def _decode(serialized: bytes) -> tuple:
    from zoo.spec import example_class

    ex = example_class().FromString(serialized)
    return tuple(sorted((k, f.WhichOneof("kind"), tuple(getattr(f, f.WhichOneof("kind")).value))
                        for k, f in ex.features.feature.items()))


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    d = tmp_path_factory.mktemp("vocab_raw")
    (d / "rows.csv").write_text("\n".join([HEADER] + ROWS) + "\n")
    return str(d / "*.csv")


def test_vocabulary_pass_then_encoding_pass_exact(raw, tmp_path):
    spec = FeatureSpec.from_dict(SPEC)
    assert spec.needs_vocabularies and set(spec.vocabulary_tables) == {"city", "strict"}
    vocab_dir = str(tmp_path / "vocab")
    with BeamTestPipeline() as p:
        out = build_tfrecords.build_vocab_pipeline(p, spec, raw, vocab_dir, shards=3)
        assert_that(out["vocabularies"], equal_to([("city", CITY_VOCAB), ("strict", STRICT_VOCAB)]), label="vocab")
        assert_that(out["summary"], equal_to([{"city": CITY_SUMMARY, "strict": STRICT_SUMMARY}]), label="summary")
    assert open(os.path.join(vocab_dir, "city.txt")).read() == "paris\nrome\nlima\noslo\n"
    summary = json.load(open(os.path.join(vocab_dir, "vocabularies.json")))
    resolved = build_tfrecords.resolve_vocabularies(spec, summary)
    assert resolved.feature("city").vocab_size == 4 and resolved.feature("tags").vocab_size == 4
    assert resolved.feature("city").vocabulary.file == "vocab/city.txt"
    assert resolved.feature("strict").num_rows == 3  # 2 tokens + the OOV row

    expected = {s: collections.Counter(map(_canonical, rows)) for s, rows in EXPECTED.items()}
    paths = {t: os.path.join(vocab_dir, f"{t}.txt") for t in ("city", "strict")}
    with BeamTestPipeline() as p:
        pcolls = build_tfrecords.build_pipeline(p, resolved, raw, str(tmp_path / "out"), 1, vocab_paths=paths)
        for split in SPLITS:
            got = (pcolls["examples"]
                   | f"Only_{split}" >> beam.Filter(lambda kv, s=split: kv[0] == s)
                   | f"Decode_{split}" >> beam.Map(lambda kv: _decode(kv[1])))
            assert_that(got, equal_to(list(expected[split].elements())), label=f"examples_{split}")
        assert_that(pcolls["dead_letter"] | beam.Map(lambda d: (d["line"], d["reason"], d["error"])),
                    equal_to(EXPECTED_DEAD), label="dead")
        assert_that(pcolls["dead_letter_counts"], equal_to([("bad_number", 1), ("unknown_category", 1)]),
                    label="dead_counts")


def test_cli_two_passes_round_trip_through_the_reader(raw, tmp_path):
    import tensorflow as tf

    from zoo import data

    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(json.dumps(SPEC))
    out = str(tmp_path / "data")
    info = build_tfrecords.run(["--spec", str(spec_path), "--input", raw, "--output", out, "--num_shards", "2",
                                "--direct_running_mode=in_memory"])
    stats = info["stats"]
    assert stats["splits"] == {"train": {"rows": 5, "positives": 3, "base_rate": 0.6},
                               "valid": {"rows": 2, "positives": 1, "base_rate": 0.5},
                               "test": {"rows": 1, "positives": 0, "base_rate": 0.0}}
    assert stats["cohorts"]["price_band"] == {"cheap": {"rows": 4, "positives": 1, "base_rate": 0.25},
                                              "dear": {"rows": 4, "positives": 3, "base_rate": 0.75}}
    assert stats["features"] == {
        "u": {"kind": "categorical", "out_of_vocab": 0},
        "city": {"kind": "categorical", "out_of_vocab": 1},                  # tokyo
        "tags": {"kind": "sequence", "out_of_vocab": 1, "truncated": 1},     # tokyo; oslo cut away
        "hx": {"kind": "categorical", "out_of_vocab": 0},
        "strict": {"kind": "categorical", "out_of_vocab": 0},
    }
    assert stats["dead_letter"] == {"total": 2, "by_reason": {"bad_number": 1, "unknown_category": 1}}
    assert stats["vocabularies"] == {"city": CITY_SUMMARY, "strict": STRICT_SUMMARY}
    assert fileio.is_complete(out)
    assert sorted(os.listdir(os.path.join(out, "vocab"))) == ["city.txt", "strict.txt", "vocabularies.json"]

    # The resolved spec describes the encoded columns: int ids with vocab_size, the file they came from.
    resolved = load_spec(out)
    assert resolved.feature("city").vocab_size == 4 and resolved.feature("strict").vocab_size == 2
    assert resolved.to_dict()["features"][1]["vocabulary"] == {"min_count": 2, "splits": ["train"],
                                                               "file": "vocab/city.txt"}
    assert not resolved.needs_vocabularies
    for split in SPLITS:
        got = collections.Counter()
        for batch in data.read_split(out, split, batch_size=3):
            n = int(tf.shape(batch["y"])[0])
            for i in range(n):
                got[tuple(sorted((k, "float_list" if v.dtype == tf.float32 else "int64_list",
                                  tuple(v[i].numpy().tolist())) for k, v in batch.items()))] += 1
        assert got == collections.Counter(map(_canonical, EXPECTED[split])), split
    dead = [json.loads(line) for path in glob.glob(os.path.join(out, "dead_letter", "*.jsonl"))
            for line in open(path)]
    assert sorted((d["line"], d["reason"], d["error"]) for d in dead) == sorted(EXPECTED_DEAD)

    # Reusing the vocabularies: the resolved spec.json as --spec encodes new rows with the same ids.
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "rows.csv").write_text(HEADER + "\n1,3,oslo,lima,AB,0,blue,valid\n")
    out2 = str(tmp_path / "data2")
    info2 = build_tfrecords.run(["--spec", os.path.join(out, "spec.json"), "--input", str(tmp_path / "more" / "*.csv"),
                                 "--output", out2, "--num_shards", "1", "--direct_running_mode=in_memory"])
    assert info2["stats"]["splits"]["valid"]["rows"] == 1
    assert open(os.path.join(out2, "vocab", "city.txt")).read() == "paris\nrome\nlima\noslo\n"
    (batch,) = list(data.read_split(out2, "valid", batch_size=4))
    assert batch["city"].numpy().tolist() == [[3]] and batch["tags"].numpy().tolist() == [[2, -1, -1]]
    assert batch["strict"].numpy().tolist() == [[1]]


def test_spec_rules_for_vocabularies_and_transforms():
    from zoo.spec import SpecError

    def bad(change, message):
        raw = json.loads(json.dumps(SPEC))
        change(raw)
        with pytest.raises(SpecError, match=message):
            FeatureSpec.from_dict(raw)

    bad(lambda r: r["features"][1].update(hash_buckets=7), "a vocabulary feature has no hash_buckets")
    bad(lambda r: r["features"][1].update(vocab_size=7), "vocab_size of a vocabulary feature is set by building it")
    bad(lambda r: r["features"][1].pop("vocabulary"), "give exactly one of vocab_size or hash_buckets")
    bad(lambda r: r["features"][3].update(vocab_size=3, hash_buckets=None) or r["features"][3].pop("hash_buckets"),
        "hex tokens need hash_buckets or a vocabulary")
    bad(lambda r: r["features"][2].update(raw_type="string"), "share_embedding takes raw_type, vocabulary and unknown")
    bad(lambda r: r["features"][4].update(transforms=["sqrt"]), "unknown transform 'sqrt'")
    bad(lambda r: r["features"][4].update(transforms=[{"clip": [2, 1]}]), "clip bounds must have lo <= hi")
    bad(lambda r: r["features"][3].update(unknown="error"), "'unknown' applies to vocabulary features")
    bad(lambda r: r["features"][1].update(vocabulary={"min_count": 0}), "vocabulary.min_count must be an integer >= 1")
    bad(lambda r: r["features"][0].update(raw_type="float"), "raw_type must be one of")
    bad(lambda r: r.update(split_by="day"), "split_by: must be one of")
    bad(lambda r: r["cohort_axes"].append({"name": "c", "feature": "city", "boundaries": [2]}),
        "cohort axis 'c': 'boundaries' needs a dense or raw-integer feature; the ids of 'city' are a vocabulary's")
    bad(lambda r: r["cohort_axes"].append({"name": "c", "feature": "hx", "boundaries": [2]}),
        "cohort axis 'c': 'boundaries' needs a dense or raw-integer feature; the ids of 'hx' are hash buckets")
    bad(lambda r: r["cohort_axes"].append({"name": "c", "feature": "city", "values": {"a": ["oslo"], "b": [" oslo"]}}),
        "cohort axis 'c': value ' oslo' is in both 'a' and 'b'")
    bad(lambda r: r["cohort_axes"].append({"name": "c", "feature": "city", "values": {"a": [True]}}),
        "cohort axis 'c': cohort 'a' lists True; raw values are strings")
    bad(lambda r: r["cohort_axes"].append({"name": "c", "feature": "hx", "values": {"a": ["xyz"]}}),
        "cohort axis 'c': cohort 'a' lists 'xyz'; 'hx' has hexadecimal raw values")
    bad(lambda r: r["cohort_axes"].append({"name": "c", "feature": "u", "values": {"a": [1]}, "ids": {"a": [1]}}),
        "cohort axis 'c': 'ids' belongs to raw values of a mapped feature")
    colliding = next(t for t in (f"{i:x}" for i in range(1, 99)) if _h(t) == _h("ab"))
    bad(lambda r: r["cohort_axes"].append({"name": "c", "feature": "hx", "values": {"a": ["AB"], "b": [colliding]}}),
        f"cohort axis 'c': values 'ab' \\('a'\\) and '{colliding}' \\('b'\\) share hash bucket {_h('ab')} of 'hx'")
    with pytest.raises(SpecError, match="its vocabulary is not built yet"):
        FeatureSpec.from_dict(SPEC).feature("city").num_rows


RAW_VALUE_AXES = [
    # A vocabulary feature: raw tokens resolved to the built vocabulary's ids (oslo 3; rome 1, paris 0).
    {"name": "region", "feature": "city", "values": {"north": ["oslo"], "south": ["rome", " paris"]},
     "other": "elsewhere"},
    # A hashed hex feature: the token's bucket (lower-cased like the row parser); a value in the same
    # bucket counts in the cohort too, which is what the model's ids can tell.
    {"name": "hex", "feature": "hx", "values": {"ab": ["AB"]}, "other": "rest"},
]


def test_cohort_axes_by_raw_values_of_string_features(raw, tmp_path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(json.dumps({**SPEC, "cohort_axes": SPEC["cohort_axes"] + RAW_VALUE_AXES}))
    declared = load_spec(str(spec_path))
    assert declared.needs_axis_ids and declared.axis("hex").raw_values == {"ab": ("ab",)}
    assert declared.axis("hex").values == {"ab": (_h("ab"),)} and declared.axis("region").values is None
    out = str(tmp_path / "data")
    info = build_tfrecords.run(["--spec", str(spec_path), "--input", raw, "--output", out, "--num_shards", "1",
                                "--direct_running_mode=in_memory"])
    resolved = load_spec(out)
    region = resolved.axis("region")
    assert region.values == {"north": (3,), "south": (1, 0)} and region.raw_values["south"] == ("rome", "paris")
    assert resolved.to_dict()["cohort_axes"][1] == {"name": "region", "feature": "city",
                                                    "values": {"north": ["oslo"], "south": ["rome", "paris"]},
                                                    "other": "elsewhere", "ids": {"north": [3], "south": [1, 0]}}
    assert FeatureSpec.from_dict(resolved.to_dict()) == resolved
    # good rows: city paris, paris, rome, oslo, paris (train), rome, tokyo (valid, OOV), oslo (test)
    assert info["stats"]["cohorts"]["region"] == {"north": {"rows": 2, "positives": 0, "base_rate": 0.0},
                                                  "south": {"rows": 5, "positives": 4, "base_rate": 0.8},
                                                  "elsewhere": {"rows": 1, "positives": 0, "base_rate": 0.0}}
    good = [(1.0, "ab"), (0.0, "ab"), (1.0, "ff"), (0.0, ""), (1.0, "1f"), (1.0, "ab"), (0.0, "cd"), (0.0, "00")]
    in_ab = [y for y, hx in good if _h(hx) == _h("ab")]
    assert info["stats"]["cohorts"]["hex"]["ab"]["rows"] == len(in_ab) >= 3
    assert info["stats"]["cohorts"]["hex"]["ab"]["positives"] == sum(in_ab)

    # The resolved spec.json as --spec (vocabularies reused) gives new rows the same cohorts.
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "rows.csv").write_text(HEADER + "\n1,3,oslo,lima,AB,0,blue,valid\n0,4,rome,,ff,1,red,valid\n")
    out2 = str(tmp_path / "data2")
    info2 = build_tfrecords.run(["--spec", os.path.join(out, "spec.json"), "--input", str(tmp_path / "more" / "*.csv"),
                                 "--output", out2, "--num_shards", "1", "--direct_running_mode=in_memory"])
    assert {k: v["rows"] for k, v in info2["stats"]["cohorts"]["region"].items()} == {"north": 1, "south": 1,
                                                                                      "elsewhere": 0}

    # A listed value that the vocabulary does not keep cannot be told from other unknown values.
    bad_path = tmp_path / "bad.yaml"
    axis = {"name": "far", "feature": "city", "values": {"east": ["tokyo"]}}
    bad_path.write_text(json.dumps({**SPEC, "cohort_axes": SPEC["cohort_axes"] + [axis]}))
    with pytest.raises(SpecError, match="cohort axis 'far': value 'tokyo' of cohort 'east' is not in the vocabulary "
                                        "of 'city' \\(4 tokens"):
        build_tfrecords.run(["--spec", str(bad_path), "--input", raw, "--output", str(tmp_path / "data3"),
                             "--direct_running_mode=in_memory"])

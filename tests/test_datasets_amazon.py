"""The Amazon reviews adapter: history construction (strictly earlier reviews only), sampled negatives,
leave-last-out split and bad input, on a hand-made review file; then the same rules checked row by
row on the real Musical Instruments 5-core file in ``../shared/data`` (skipped locally when absent,
failed under CI). Expectations are computed here from the JSON, independently of the adapter."""

from __future__ import annotations

import collections
import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest

from zoo.datasets import amazon, write_raw
from zoo.spec import FeatureSpec, SpecError, load_spec

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "amazon_musical_instruments_5core"
SPEC_PATH = ROOT / "configs" / "datasets" / "amazon_musical_instruments.yaml"

# Four users; user "A" has two reviews on day 200 (a tie) and one on day 300; asins sort to items 0..7.
REVIEWS = [
    ("A", "i3", 5, 100), ("B", "i1", 2, 50), ("A", "i1", 4, 200), ("A", "i2", 3, 200),
    ("C", "i0", 5, 10), ("B", "i0", 4, 60), ("A", "i4", 1, 300), ("C", "i4", 5, 10), ("B", "i2", 5, 70),
    ("D", "i7", 3, 5), ("D", "i5", 4, 6), ("D", "i6", 2, 7),
]


def write_reviews(folder: Path, reviews=REVIEWS, extra_line: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "reviews.json"
    lines = [json.dumps({"reviewerID": u, "asin": a, "overall": float(r), "unixReviewTime": t, "summary": "x"})
             for u, a, r, t in reviews]
    if extra_line is not None:
        lines.append(extra_line)
    path.write_text("\n".join(lines) + "\n")
    return path


def spec_with(**options) -> FeatureSpec:
    raw = load_spec(SPEC_PATH).to_dict()
    raw["adapter_options"] = {**raw.get("adapter_options", {}), **options}
    return FeatureSpec.from_dict(raw)


def read_rows(spec, paths):
    fmt = spec.raw_format
    (path,) = paths
    lines = Path(path).read_text().splitlines()
    assert lines[0] == fmt.delimiter.join(fmt.columns)
    return [spec.parse_raw_row(line.split(fmt.delimiter)) for line in lines[1:]]


def test_histories_are_the_strictly_earlier_items_and_the_split_is_leave_last_out(tmp_path):
    spec = spec_with(negatives_per_positive=0)
    rows = read_rows(spec, write_raw(spec, str(write_reviews(tmp_path / "src")), str(tmp_path / "out")))
    got = [(r["user_id"], r["item_id"], r["history"], r["history_length"], r["rating"], r["click"],
            r["user_activity"], r["time"], r["__split__"]) for r in rows]
    assert got == [
        # user A (0): day 100, two reviews on day 200 (neither sees the other), day 300 sees all three
        (0, 3, [], 0.0, 5.0, 1.0, 4.0, 100.0, "train"),
        (0, 1, [3], 1.0, 4.0, 1.0, 4.0, 200.0, "train"),
        (0, 2, [3], 1.0, 3.0, 1.0, 4.0, 200.0, "valid"),
        (0, 4, [3, 1, 2], 3.0, 1.0, 1.0, 4.0, 300.0, "test"),
        # user B (1): in time order, not file order
        (1, 1, [], 0.0, 2.0, 1.0, 3.0, 50.0, "train"),
        (1, 0, [1], 1.0, 4.0, 1.0, 3.0, 60.0, "valid"),
        (1, 2, [1, 0], 2.0, 5.0, 1.0, 3.0, 70.0, "test"),
        # user C (2): both reviews on one day, ties in file order; no history for either
        (2, 0, [], 0.0, 5.0, 1.0, 2.0, 10.0, "valid"),
        (2, 4, [], 0.0, 5.0, 1.0, 2.0, 10.0, "test"),
        # user D (3)
        (3, 7, [], 0.0, 3.0, 1.0, 3.0, 5.0, "train"),
        (3, 5, [7], 1.0, 4.0, 1.0, 3.0, 6.0, "valid"),
        (3, 6, [7, 5], 2.0, 2.0, 1.0, 3.0, 7.0, "test"),
    ]


def test_negatives_are_unseen_distinct_items_beside_their_positive(tmp_path):
    source = write_reviews(tmp_path / "src")
    spec = spec_with(negatives_per_positive=2, negative_seed=3)
    rows = read_rows(spec, write_raw(spec, str(source), str(tmp_path / "out")))
    assert len(rows) == 3 * len(REVIEWS)
    reviewed = collections.defaultdict(set)
    for u, a, _, _ in REVIEWS:
        reviewed[u].add(int(a[1:]))
    users = sorted(reviewed)
    for k in range(0, len(rows), 3):
        positive, negatives = rows[k], rows[k + 1:k + 3]
        assert positive["click"] == 1.0 and positive["rating"] >= 1
        items = {n["item_id"] for n in negatives}
        assert len(items) == 2 and not items & reviewed[users[positive["user_id"]]]
        for n in negatives:  # same user, history, time and split as the positive; no stars
            assert n["click"] == 0.0 and n["rating"] == 0.0
            assert {key: n[key] for key in ("user_id", "history", "time", "__split__", "user_activity")} == {
                key: positive[key] for key in ("user_id", "history", "time", "__split__", "user_activity")}
    # The draw is seeded by adapter_options.negative_seed alone (not the run's --seed).
    again = read_rows(spec, write_raw(spec, str(source), str(tmp_path / "again"), seed=99))
    assert again == rows
    other = spec_with(negatives_per_positive=2, negative_seed=4)
    assert read_rows(other, write_raw(other, str(source), str(tmp_path / "other"))) != rows
    # User A reviewed 4 of the 8 items: four are left to sample from.
    with pytest.raises(ValueError, match="user 'A': reviewed 4 of 8 items, fewer than negatives_per_positive=5"):
        amazon.build_rows(amazon.read_reviews(str(source)), negatives_per_positive=5)


@pytest.mark.parametrize("line, message", [
    ("{not json", r"reviews.json:13: not a JSON object"),
    ('{"reviewerID": "A", "asin": "i1", "overall": 5.0}', r"reviews.json:13: review has no \['unixReviewTime'\]"),
    ('{"reviewerID": "A", "asin": "i1", "overall": 4.5, "unixReviewTime": 1}', r"overall must be 1..5 stars, got 4.5"),
    ('{"reviewerID": "A", "asin": "i1", "overall": 4, "unixReviewTime": "x"}', r"unixReviewTime must be an integer"),
])
def test_a_bad_review_is_named_by_file_and_line(tmp_path, line, message):
    source = write_reviews(tmp_path / "src", extra_line=line)
    with pytest.raises(ValueError, match=message):
        amazon.read_reviews(str(source))


def test_bad_options_and_spec_mismatches_are_named(tmp_path):
    source = str(write_reviews(tmp_path / "src"))
    with pytest.raises(ValueError, match=r"adapter_options: unknown option\(s\) \['negatives'\] for adapter "
                                         r"'amazon_reviews'"):
        write_raw(spec_with(negatives=1), source, str(tmp_path / "out"))
    with pytest.raises(ValueError, match="adapter_options: negatives_per_positive must be an integer >= 0, got -1"):
        write_raw(spec_with(negatives_per_positive=-1), source, str(tmp_path / "out"))
    raw = spec_with(negatives_per_positive=0).to_dict()
    raw["features"] = copy.deepcopy(raw["features"])
    raw["features"][1]["vocab_size"] = 7  # item_id: the file has 8 items
    with pytest.raises(ValueError, match="feature 'item_id' has vocab_size 7 but the source has 8 distinct ids"):
        write_raw(FeatureSpec.from_dict(raw), source, str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"expected one \*.json review file in"):
        write_raw(spec_with(), str(tmp_path), str(tmp_path / "out"))  # no *.json directly in tmp_path
    spec = load_spec(SPEC_PATH)
    assert FeatureSpec.from_dict(spec.to_dict()).adapter_options == {"negatives_per_positive": 4, "negative_seed": 0}
    raw = spec.to_dict()
    del raw["adapter"]
    with pytest.raises(SpecError, match="adapter_options: given without an 'adapter'"):
        FeatureSpec.from_dict(raw)
    with pytest.raises(SpecError, match="adapter_options: must be a mapping of option names to values, got 4"):
        FeatureSpec.from_dict({**spec.to_dict(), "adapter_options": 4})


# ----------------------------------------------------------------------------------------
# The real Musical Instruments 5-core file
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real(tmp_path_factory):
    if not DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{DATA} absent (required under CI)")
        pytest.skip(f"{DATA} absent")
    spec = load_spec(SPEC_PATH)
    rows = read_rows(spec, write_raw(spec, str(DATA), str(tmp_path_factory.mktemp("amazon"))))
    with open(DATA / "Musical_Instruments.json") as fh:
        reviews = [json.loads(line) for line in fh if line.strip()]
    return spec, rows, reviews


def test_real_rows_never_see_the_present_or_the_future(real):
    spec, rows, reviews = real
    users = sorted({r["reviewerID"] for r in reviews})
    items = sorted({r["asin"] for r in reviews})
    assert (len(reviews), len(users), len(items)) == (10_261, 1_429, 900)
    assert len(rows) == 5 * len(reviews) and sum(r["click"] for r in rows) == len(reviews)
    times = collections.defaultdict(dict)  # user index -> item index -> review time
    for r in reviews:
        times[users.index(r["reviewerID"])][items.index(r["asin"])] = r["unixReviewTime"]
    for row in rows:
        mine, when = times[row["user_id"]], row["time"]
        earlier = [i for i, t in mine.items() if t < when]
        # The raw history is every strictly earlier item, oldest first (the Beam job's keep_last then
        # keeps the spec's max_length latest).
        assert sorted(row["history"]) == sorted(earlier) and row["history_length"] == len(earlier)
        assert [mine[i] for i in row["history"]] == sorted(mine[i] for i in row["history"])
        assert row["item_id"] not in row["history"]
        if row["click"] == 1.0:
            assert mine[row["item_id"]] == when
        else:
            assert row["item_id"] not in mine
    splits = collections.Counter((r["__split__"], r["click"]) for r in rows)
    assert splits[("test", 1.0)] == splits[("valid", 1.0)] == 1_429
    assert splits[("train", 1.0)] == 10_261 - 2 * 1_429
    # Each user's test event is (one of) their latest.
    latest = {u: max(t.values()) for u, t in times.items()}
    assert all(r["time"] == latest[r["user_id"]] for r in rows if r["__split__"] == "test")

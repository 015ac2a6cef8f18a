"""Adapters on the real public datasets: MovieLens-100K and Frappe_x1.

The data lives next to the checkout in ``../shared/data`` (never in the repository). A missing
dataset skips its tests locally and fails them under CI (``CI`` set).

Every expectation is computed here from the source files, independently of the adapters.
"""

from __future__ import annotations

import collections
import csv
import datetime
import os
from pathlib import Path

import numpy as np
import pytest

from zoo.datasets import ADAPTERS, write_raw
from zoo.spec import SPLITS, load_spec

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CONFIGS = ROOT / "configs" / "datasets"


def _source(folder: str) -> Path:
    path = DATA / folder
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{path} absent (required under CI)")
        pytest.skip(f"{path} absent")
    return path


def _read_output(spec, paths):
    """Headers and parsed rows of the adapter's CSVs, split like the Beam job reads them."""
    fmt = spec.raw_format
    headers, parsed = set(), []
    for path in paths:
        with open(path) as fh:
            lines = fh.read().splitlines()
        if fmt.header:
            headers.add(tuple(lines[0].split(fmt.delimiter)))
            lines = lines[1:]
        parse = spec.parse_raw_row  # raises RowError on any malformed row
        parsed.extend(parse(line.split(fmt.delimiter)) for line in lines)
    return headers, parsed


def _columns(spec, rows):
    """Parsed rows as one numpy array per label / categorical / dense column (and split)."""
    names = [spec.label] + [f.name for f in spec.features if f.kind != "sequence"]
    if spec.raw_format.split_column:
        names.append("__split__")
    return {n: np.array([r[n] for r in rows]) for n in names}


def _check_vocab(spec, rows, cols):
    """Every id of every row is in vocabulary; returns each sequence feature's longest list."""
    longest = {}
    for f in spec.features:
        if f.kind == "categorical":
            assert cols[f.name].min() >= 0 and cols[f.name].max() < f.vocab_size, f.name
            assert not any(f.is_out_of_vocab(v) for v in np.unique(cols[f.name]).tolist())
        elif f.kind == "sequence":
            lists = [r[f.name] for r in rows]
            flat = np.array([i for ids in lists for i in ids])
            assert flat.min() >= 0 and flat.max() < f.vocab_size, f.name
            longest[f.name] = max(map(len, lists))
    return longest


def _cohorts(spec, cols):
    """Axis name -> cohort name of every row (the spec's own ``cohort_id`` on each value)."""
    out = {}
    for axis in spec.cohort_axes:
        values, inverse = np.unique(cols[axis.feature], return_inverse=True)
        names = np.array([axis.cohorts[axis.cohort_id(v)] for v in values.tolist()])
        out[axis.name] = names[inverse]
    return out


def _counts(names):
    return collections.Counter(names.tolist())


@pytest.mark.parametrize("name", ["movielens100k", "frappe_x1"])
def test_spec_loads(name):
    spec = load_spec(CONFIGS / f"{name}.yaml")
    assert spec.name == name and spec.adapter in ADAPTERS
    assert spec.c2al["axis"] == "user_activity"
    assert spec.feature("user_activity").input is False


# ----------------------------------------------------------------------------------------
# MovieLens-100K
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ml(tmp_path_factory):
    source = _source("ml-100k")
    spec = load_spec(CONFIGS / "movielens100k.yaml")
    paths = write_raw(spec, str(source), str(tmp_path_factory.mktemp("ml")))
    headers, rows = _read_output(spec, paths)
    with open(source / "u.data") as fh:
        ratings = [tuple(map(int, line.split("\t"))) for line in fh if line.strip()]
    return dict(spec=spec, source=source, paths=paths, headers=headers, rows=rows,
                cols=_columns(spec, rows), ratings=ratings)


def test_movielens_rows_and_labels(ml):
    spec, rows, ratings = ml["spec"], ml["rows"], ml["ratings"]
    assert len(ml["paths"]) == 1
    assert ml["headers"] == {spec.raw_format.columns}
    assert len(rows) == len(ratings) == 100_000
    positives = sum(r >= 4 for _, _, r, _ in ratings)
    assert positives == 55_375
    assert sum(r[spec.label] for r in rows) == positives  # positive rate 0.554
    # Row order is u.data order: ids, label and UTC time fields line up row by row.
    for row, (user, item, rating, ts) in zip(rows, ratings):
        when = datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)
        assert (row["user_id"], row["item_id"], row[spec.label], row["hour"], row["weekday"]) == (
            user - 1, item - 1, float(rating >= 4), when.hour, when.weekday())


def _table(path: Path, sep: str = "|") -> list[list[str]]:
    """Non-blank lines of a MovieLens metadata file, split (latin-1, as u.item needs)."""
    with open(path, encoding="latin-1") as fh:
        return [line.rstrip("\n").split(sep) for line in fh if line.strip()]


def test_movielens_known_answer(ml):
    source, rows, ratings = ml["source"], ml["rows"], ml["ratings"]
    assert ratings[0] == (196, 242, 3, 881250949)
    users = {u[0]: u for u in _table(source / "u.user")}
    assert users["196"][1:] == ["49", "M", "writer", "55105"]
    occupations = [o[0] for o in _table(source / "u.occupation")]
    when = datetime.datetime.fromtimestamp(881250949, tz=datetime.timezone.utc)
    assert (when.hour, when.weekday()) == (15, 3)  # 1997-12-04 15:55 UTC, a Thursday
    assert rows[0] == {
        "click": 0.0, "user_id": 195, "item_id": 241,
        "age_bucket": 4,  # 45-49
        "gender": 0, "occupation": occupations.index("writer"), "zip_region": 5,
        "genres": [5],  # item 242 "Kolya (1996)": Comedy
        "release_decade": 8,  # 1990s
        "hour": when.hour, "weekday": when.weekday(),
        "user_activity": float(sum(u == 196 for u, _, _, _ in ratings)),
    }
    # A Canadian (non-numeric) zip and a multi-genre movie.
    canadian = next(r for r, (u, *_) in zip(rows, ratings) if not users[str(u)][4][0].isdigit())
    assert canadian["zip_region"] == 10
    flags = {i[0]: i[-19:] for i in _table(source / "u.item")}["1"]  # Toy Story (1995)
    toy_story = next(r for r, (_, i, *_) in zip(rows, ratings) if i == 1)
    assert toy_story["genres"] == [g for g, f in enumerate(flags) if f == "1"] == [3, 4, 5]
    assert toy_story["release_decade"] == 8


def test_movielens_vocab_and_genres(ml):
    spec, source, cols = ml["spec"], ml["source"], ml["cols"]
    longest = _check_vocab(spec, ml["rows"], cols)
    most_genres = max(sum(map(int, i[-19:])) for i in _table(source / "u.item"))
    assert longest["genres"] == most_genres == spec.feature("genres").max_length  # no truncation
    assert len(np.unique(cols["user_id"])) == spec.feature("user_id").vocab_size
    assert len(np.unique(cols["item_id"])) == spec.feature("item_id").vocab_size


def test_movielens_cohorts_and_split(ml):
    spec, rows = ml["spec"], ml["rows"]
    cohorts = _cohorts(spec, ml["cols"])
    counts = {axis: _counts(names) for axis, names in cohorts.items()}
    for axis in spec.cohort_axes:
        assert set(counts[axis.name]) == set(axis.cohorts), (axis.name, counts[axis.name])
    assert counts["gender"]["male"] + counts["gender"]["female"] == 100_000
    # user_activity: light/heavy hold about 10 % of the users each.
    per_user = collections.Counter(u for u, *_ in ml["ratings"])
    axis = spec.axis("user_activity")
    shares = collections.Counter(axis.cohorts[axis.cohort_id(n)] for n in per_user.values())
    assert shares == {"light": 100, "medium": 748, "heavy": 95}
    assert 0.08 <= shares["light"] / 943 <= 0.12 and 0.08 <= shares["heavy"] / 943 <= 0.12
    assert counts["user_activity"] == {"light": 2_133, "medium": 65_678, "heavy": 32_189}
    # Hash split by user: every split non-empty, users in exactly one split.
    split_users = collections.defaultdict(set)
    for r in rows:
        split_users[spec.split_of(r)].add(r["user_id"])
    assert set(split_users) == set(SPLITS)
    assert sum(map(len, split_users.values())) == 943
    assert 0.7 < len(split_users["train"]) / 943 < 0.9


# ----------------------------------------------------------------------------------------
# Frappe_x1
# ----------------------------------------------------------------------------------------
FRAPPE_FIELDS = ("user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather",
                 "country", "city")
FRAPPE_ROWS = {"train": 202_027, "valid": 57_722, "test": 28_860}


@pytest.fixture(scope="module")
def fr(tmp_path_factory):
    source = _source("frappe_x1")
    spec = load_spec(CONFIGS / "frappe_x1.yaml")
    paths = write_raw(spec, str(source), str(tmp_path_factory.mktemp("frappe")))
    headers, rows = _read_output(spec, paths)
    src = {s: np.loadtxt(source / f"{s}.csv", delimiter=",", skiprows=1, dtype=np.int64)
           for s in SPLITS}
    with open(source / "feature_map.csv", newline="") as fh:
        fmap = [(int(r["feature_id"]), r["field"], r["raw_value"]) for r in csv.DictReader(fh)]
    return dict(spec=spec, source=source, paths=paths, headers=headers, rows=rows,
                cols=_columns(spec, rows), src=src, fmap=fmap)


def _frappe_column(name):
    return {"user": "user_id", "item": "item_id"}.get(name, name)


def test_frappe_rows_splits_and_labels(fr):
    spec, cols, src = fr["spec"], fr["cols"], fr["src"]
    assert spec.raw_format.split_column == "split"
    assert fr["headers"] == {spec.raw_format.columns}
    assert len(fr["rows"]) == sum(FRAPPE_ROWS.values()) == 288_609
    assert _counts(cols["__split__"]) == FRAPPE_ROWS
    assert {s: len(a) for s, a in src.items()} == FRAPPE_ROWS
    positives = {s: int(cols[spec.label][cols["__split__"] == s].sum()) for s in SPLITS}
    assert positives == {s: int(a[:, 0].sum()) for s, a in src.items()}
    assert dict(positives) == {"train": 67_604, "valid": 19_063, "test": 9_536}  # ~ 1/3 each


def test_frappe_local_ids(fr):
    spec, rows, cols, src, fmap = fr["spec"], fr["rows"], fr["cols"], fr["src"], fr["fmap"]
    field_min = {}
    field_size = collections.Counter(field for _, field, _ in fmap)
    for gid, field, _ in fmap:
        field_min[field] = min(gid, field_min.get(field, gid))
    # Output rows are the source rows, in order, with id - field minimum.
    a = np.concatenate([src[s] for s in SPLITS])
    given = np.repeat(SPLITS, [len(src[s]) for s in SPLITS])
    np.testing.assert_array_equal(cols["__split__"], given)
    np.testing.assert_array_equal(cols[spec.label], a[:, 0])
    for j, field in enumerate(FRAPPE_FIELDS, start=1):
        np.testing.assert_array_equal(cols[_frappe_column(field)], a[:, j] - field_min[field],
                                      err_msg=field)
    # vocab_size is exact: the field's id count in feature_map.csv.
    for field in FRAPPE_FIELDS:
        assert spec.feature(_frappe_column(field)).vocab_size == field_size[field], field
    _check_vocab(spec, rows, cols)
    # Known answer: first train row 1,476,982,5045,5052,5054,5057,5058,5065,5087,5191.
    first = rows[0]
    assert src["train"][0].tolist() == [1, 476, 982, 5045, 5052, 5054, 5057, 5058, 5065, 5087, 5191]
    raw = {gid: value for gid, _, value in fmap}
    assert (raw[5045], raw[5052], raw[5087]) == ("sunrise", "friday", "Australia")
    keys = ("click", "user_id", "item_id", "daytime", "weekday", "country")
    assert {k: first[k] for k in keys} == {
        "click": 1.0, "user_id": 476, "item_id": 25, "daytime": 6, "weekday": 6, "country": 18}


def test_frappe_cohorts(fr):
    spec, cols, src, fmap = fr["spec"], fr["cols"], fr["src"], fr["fmap"]
    # Country cohort ids carry the names of their raw values.
    countries = [value for _, field, value in fmap if field == "country"]
    axis = spec.axis("country")
    for cohort, ids in axis.values.items():
        (cid,) = ids
        raw = countries[cid]
        assert cohort == ("unknown_country" if raw == "unknown" else raw.lower().replace(" ", "_"))
    # They are the six countries with the most train rows.
    top = collections.Counter(src["train"][:, 9].tolist()).most_common(6)
    country_min = min(g for g, f, _ in fmap if f == "country")
    assert sorted(g - country_min for g, _ in top) == sorted(i for (i,) in axis.values.values())
    # user_activity = rows of the user in train.csv.
    per_user = collections.Counter(src["train"][:, 1].tolist())
    expected = np.array([per_user.get(u, 0) for u in range(spec.feature("user_id").vocab_size)])
    np.testing.assert_array_equal(cols["user_activity"], expected[cols["user_id"]])
    # Every cohort is non-empty in every split.
    cohorts = _cohorts(spec, cols)
    for split in SPLITS:
        for a in spec.cohort_axes:
            counts = _counts(cohorts[a.name][cols["__split__"] == split])
            assert set(counts) == set(a.cohorts), (split, a.name, counts)
    # light ~ bottom quartile, heavy ~ top decile of the train users.
    ua = spec.axis("user_activity")
    shares = collections.Counter(ua.cohorts[ua.cohort_id(n)] for n in per_user.values())
    assert shares == {"light": 223, "medium": 635, "heavy": 96}
    assert 0.2 <= shares["light"] / 954 <= 0.27 and 0.08 <= shares["heavy"] / 954 <= 0.12

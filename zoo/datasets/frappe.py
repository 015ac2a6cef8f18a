"""Frappe_x1 adapter: the BARS/FuxiCTR 7:2:1 Frappe split with per-field local ids.

``source`` is the path of the ``frappe_x1`` folder: ``train.csv``, ``valid.csv``, ``test.csv``
(header ``label,user,item,daytime,weekday,isweekend,homework,cost,weather,country,city``;
every value but the label is a *global* feature id) and ``feature_map.csv``
(``feature_id,field,raw_value``).

Column mapping:

================ ===========================================================================
column           value
================ ===========================================================================
click            ``label`` (0/1)
user_id          ``user`` as a local id (below); equals the raw Frappe user id (0..956)
item_id          ``item`` as a local id; equals the raw Frappe app id (0..4081)
daytime .. city  the field's local id: the index of the global id among the field's ids in
                 ``feature_map.csv``, sorted ascending (each field's ids are contiguous, so
                 this is global id minus the field's smallest id). ``vocab_size`` is the
                 field's id count: daytime 7, weekday 7, isweekend 2, homework 3, cost 2,
                 weather 9, country 80, city 233
user_activity    rows of the user in ``train.csv`` (0 for the 3 users with none); a dense
                 column with ``input: false``, for the user-activity cohort axis only.
                 It counts sampled negatives too (two per positive)
split            ``train`` / ``valid`` / ``test``: the published split, kept as given
================ ===========================================================================

Output: one CSV per split (``<spec.name>_<split>.csv``, each with the header when
``format.header``), rows in source order, so the output is deterministic.

Cohort axes (declared in ``configs/datasets/frappe_x1.yaml``):

* ``country``: the six countries with the most ``train.csv`` rows each get a cohort
  (``united_states``, ``spain``, ``united_kingdom``, ``unknown_country`` (the raw value
  ``unknown``), ``peru``, ``canada``; 137,324 of 202,027 train rows); every other country is
  ``other``.
* ``user_activity``: ordinal on ``user_activity`` with boundaries ``[10, 687]``: ``light``
  (< 10 train rows: roughly the bottom quartile of train users, 223 of 954), ``medium``, and
  ``heavy`` (>= 687 train rows: the top 10 % of train users, 96 of 954). The tail is cut at
  the quartile, not the decile, because the bottom 10 % of users (< 4 train rows) have only
  83 valid and 51 test rows, too few for a stable cohort AUC. ``c2al`` defaults to head
  ``heavy``, tail ``light``.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from zoo.datasets import write_lines
from zoo.spec import SPLITS, FeatureSpec

SOURCE_COLUMNS = ("label", "user", "item", "daytime", "weekday", "isweekend", "homework", "cost",
                  "weather", "country", "city")
FIELDS = SOURCE_COLUMNS[1:]
FEATURE_NAMES = {"user": "user_id", "item": "item_id"}  # other fields keep their name


def read_feature_map(source: str) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Each field's global ids, sorted (local id = position), and raw values by local id.

    Args:
      source: path of the ``frappe_x1`` folder.

    Returns:
      ``(ids, raw_values)``: ``ids[field]`` is the ascending int64 array of the field's global
      ids, so a global id's local id is its index there; ``raw_values[field][local_id]`` is the
      raw value of that id.
    """
    by_field: dict[str, list[tuple[int, str]]] = {}
    with open(os.path.join(source, "feature_map.csv"), newline="", encoding="utf-8") as fh:
        for rec in csv.DictReader(fh):
            by_field.setdefault(rec["field"], []).append((int(rec["feature_id"]), rec["raw_value"]))
    ids, raw_values = {}, {}
    for field, pairs in by_field.items():
        pairs.sort()
        ids[field] = np.array([gid for gid, _ in pairs], dtype=np.int64)
        raw_values[field] = [raw for _, raw in pairs]
    return ids, raw_values


def to_local(field_ids: np.ndarray, global_ids: np.ndarray) -> np.ndarray:
    """Local ids (positions in ``field_ids``) of ``global_ids``; -1 where an id is not there."""
    pos = np.searchsorted(field_ids, global_ids)
    pos_in = np.minimum(pos, len(field_ids) - 1)
    return np.where(field_ids[pos_in] == global_ids, pos, -1)


def write_raw(spec: FeatureSpec, source: str, out_dir: str, **unused) -> list[str]:
    """Writes the three given splits as CSVs in the spec's raw layout.

    Args:
      spec: the ``frappe_x1`` spec; its ``format`` decides column order, delimiter and the
        name of the split column.
      source: path of the ``frappe_x1`` folder.
      out_dir: folder for ``<spec.name>_{train,valid,test}.csv`` (created if missing).
      **unused: other adapter options, ignored.

    Returns:
      The CSV paths written, in train, valid, test order.

    Raises:
      ValueError: if the source files do not match ``feature_map.csv`` (an id of the wrong
        field, a label other than 0/1, an unexpected header), a field has more ids than its
        ``vocab_size``, or the spec names a column this adapter does not produce.
    """
    del unused
    fmt = spec.raw_format
    field_ids, _ = read_feature_map(source)
    missing = [f for f in FIELDS if f not in field_ids]
    if missing:
        raise ValueError(f"frappe_x1 adapter: feature_map.csv has no field(s) {missing}")
    for field in FIELDS:
        name = FEATURE_NAMES.get(field, field)
        vocab = spec.feature(name).vocab_size
        if vocab is not None and vocab < len(field_ids[field]):
            raise ValueError(
                f"frappe_x1 adapter: feature '{name}' has vocab_size {vocab} but feature_map.csv "
                f"lists {len(field_ids[field])} ids for field '{field}'"
            )
    # Source column j of a split table -> output column name.
    names = [spec.label] + [FEATURE_NAMES.get(f, f) for f in FIELDS]
    produced = set(names) | {"user_activity"} | ({fmt.split_column} if fmt.split_column else set())
    unknown = set(fmt.columns) - produced
    if unknown:
        raise ValueError(f"frappe_x1 adapter: spec columns {sorted(unknown)} are not produced")

    tables = {split: _read_split(source, split, field_ids) for split in SPLITS}
    activity = np.bincount(tables["train"][:, 1], minlength=len(field_ids["user"]))

    paths = []
    # Ids and counts are small non-negative ints: format each value once, then look up.
    top = max(int(activity.max()), max(int(t.max()) for t in tables.values()))
    text = np.array([str(i) for i in range(top + 1)], dtype=object)
    for split, table in tables.items():
        columns = {name: text[table[:, j]].tolist() for j, name in enumerate(names)}
        columns["user_activity"] = text[activity[table[:, 1]]].tolist()
        if fmt.split_column:
            columns[fmt.split_column] = [split] * len(table)
        lines = map(fmt.delimiter.join, zip(*(columns[c] for c in fmt.columns)))
        paths.append(write_lines(spec, out_dir, f"{spec.name}_{split}.csv", lines))
    return paths


def _read_split(source: str, split: str, field_ids: dict[str, np.ndarray]) -> np.ndarray:
    """``<split>.csv`` as an int64 table: label, then the local id of each field of ``FIELDS``."""
    path = os.path.join(source, f"{split}.csv")
    with open(path, newline="") as fh:
        header = tuple(next(csv.reader(fh)))
    if header != SOURCE_COLUMNS:
        raise ValueError(f"frappe_x1 adapter: {path} header {header}, expected {SOURCE_COLUMNS}")
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    bad_label = np.flatnonzero((table[:, 0] != 0) & (table[:, 0] != 1))
    if bad_label.size:
        raise ValueError(f"frappe_x1 adapter: {path}:{bad_label[0] + 2}: label is not 0/1")
    for j, field in enumerate(FIELDS, start=1):
        local = to_local(field_ids[field], table[:, j])
        bad = np.flatnonzero(local < 0)
        if bad.size:
            raise ValueError(
                f"frappe_x1 adapter: {path}:{bad[0] + 2}: {table[bad[0], j]} is not a '{field}' id "
                "in feature_map.csv"
            )
        table[:, j] = local
    return table


def load_arrays(spec: FeatureSpec, source: str) -> dict[str, tuple[dict[str, np.ndarray], np.ndarray]]:
    """The three given splits in memory as model inputs, for NumPy-fed ``model.fit`` (no Beam, no TF).

    The same mapping as :func:`write_raw` (local ids, ``user_activity``), so a model trained on these
    arrays sees exactly the values the Beam job would write for the same rows.

    Args:
      spec: the ``frappe_x1`` spec (decides the input names and dtypes).
      source: path of the ``frappe_x1`` folder.

    Returns:
      ``{split: (features, labels)}`` for ``train``, ``valid``, ``test``: ``features`` maps every
      spec feature (inputs and ``user_activity``) to an ``(n, 1)`` array of its spec dtype;
      ``labels`` is ``(n, 1)`` float32.
    """
    field_ids, _ = read_feature_map(source)
    tables = {split: _read_split(source, split, field_ids) for split in SPLITS}
    activity = np.bincount(tables["train"][:, 1], minlength=len(field_ids["user"]))
    out = {}
    for split, table in tables.items():
        features = {FEATURE_NAMES.get(f, f): table[:, j:j + 1] for j, f in enumerate(FIELDS, start=1)}
        features["user_activity"] = activity[table[:, 1]][:, None]
        features = {name: values.astype(spec.input_dtype(spec.feature(name)))
                    for name, values in features.items()}
        out[split] = (features, table[:, :1].astype("float32"))
    return out

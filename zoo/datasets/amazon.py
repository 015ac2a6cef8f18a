"""Amazon reviews adapter: one user's reviews as a behaviour sequence, next-item rows with sampled negatives.

``source`` is a folder holding one Amazon review file (JSON lines with ``reviewerID``, ``asin``,
``overall`` 1-5 and ``unixReviewTime``, e.g. the 2014 "5-core" subsets of McAuley et al., SIGIR 2015),
or the file itself. Every review is an **event** ``(user, item, rating, time)``.

History (the behaviour sequence): the items the user reviewed **strictly before** the event's time,
oldest first. Reviews of the same user with the same ``unixReviewTime`` (the files have day
resolution; 6,107 of the 10,261 Musical Instruments reviews share their day with another review of
the same user) are not ordered, so none of them is in the others' history: a row never sees its own
item, or an item reviewed at the same time. The spec's ``max_length`` and ``truncation`` (``keep_last``:
the most recent items) cut longer histories when the Beam job parses them.

Rows (options from the dataset YAML's ``adapter_options``):

* each event gives one positive row (``click`` 1, ``rating`` the stars) and
  ``negatives_per_positive`` negative rows (``click`` 0, ``rating`` 0): the same user, history, time
  and split, with an item drawn uniformly, without replacement within the event, from the items the
  user never reviewed (``numpy.random.default_rng(negative_seed)``, drawn in output order: the same
  options give the same file). That is the DIN-style next-item task (label ``click``). With
  ``negatives_per_positive: 0`` the rows are the reviews alone and a YAML label rule on ``rating``
  (e.g. ``{name: liked, column: rating, positive: ">= 4"}``) defines a rating task.
* ``split`` (when the format declares a split column): leave-last-out per user in time order (ties
  in file order): the user's last event is ``test``, the one before ``valid``, the rest ``train``;
  the negatives follow their event. Without a split column the spec's user-hash split applies.

Column mapping (ids are 0-based: users and items numbered in sorted ``reviewerID`` / ``asin`` order):

================ ===========================================================================
column           value
================ ===========================================================================
user_id          the reviewer's index
item_id          the reviewed item's index (positive) or the sampled item's (negative)
history          item indices of the user's reviews strictly before the event, oldest first
history_length   the number of those items, before any truncation (0 for a user's first day)
rating           the stars 1-5 of the review; 0 on a sampled negative
click            1 for the reviewed item, 0 for a sampled one
user_activity    the user's number of reviews in the whole file (a cohort axis only: as a model
                 input it would leak the future length of the user's history)
time             ``unixReviewTime`` of the event
split            ``train`` / ``valid`` / ``test`` (leave-last-out), if the format has the column
================ ===========================================================================
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Any

import numpy as np

from zoo.datasets import write_lines
from zoo.spec import FeatureSpec

OPTIONS = {"negatives_per_positive": 4, "negative_seed": 0}
COLUMNS = ("user_id", "item_id", "history", "history_length", "rating", "click", "user_activity", "time")
REQUIRED_KEYS = ("reviewerID", "asin", "overall", "unixReviewTime")


@dataclasses.dataclass(frozen=True)
class Reviews:
    """The reviews as parallel arrays in file order, with the id maps."""

    user: np.ndarray    # (N,) int64 user index
    item: np.ndarray    # (N,) int64 item index
    rating: np.ndarray  # (N,) int64 stars 1-5
    time: np.ndarray    # (N,) int64 unix time
    users: tuple[str, ...]  # reviewerID of each user index (sorted)
    items: tuple[str, ...]  # asin of each item index (sorted)


def review_file(source: str) -> str:
    """The review file: ``source`` itself, or the one ``*.json`` file in the folder ``source``."""
    if os.path.isfile(source):
        return source
    found = sorted(glob.glob(os.path.join(source, "*.json")))
    if len(found) != 1:
        raise ValueError(f"amazon_reviews adapter: expected one *.json review file in {source}, found {found}")
    return found[0]


def read_reviews(source: str) -> Reviews:
    """Parses the review file; raises ValueError naming the file, line and key of a bad review."""
    path = review_file(source)
    raw = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                review = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not a JSON object ({err.msg})") from None
            missing = [k for k in REQUIRED_KEYS if k not in review]
            if missing:
                raise ValueError(f"{path}:{number}: review has no {missing}")
            rating, when = review["overall"], review["unixReviewTime"]
            if rating not in (1, 2, 3, 4, 5):
                raise ValueError(f"{path}:{number}: overall must be 1..5 stars, got {rating!r}")
            if isinstance(when, bool) or not isinstance(when, int):
                raise ValueError(f"{path}:{number}: unixReviewTime must be an integer, got {when!r}")
            raw.append((str(review["reviewerID"]), str(review["asin"]), int(rating), when))
    if not raw:
        raise ValueError(f"{path}: no reviews")
    users = tuple(sorted({r[0] for r in raw}))
    items = tuple(sorted({r[1] for r in raw}))
    user_index = {u: i for i, u in enumerate(users)}
    item_index = {a: i for i, a in enumerate(items)}
    return Reviews(
        user=np.array([user_index[r[0]] for r in raw], np.int64),
        item=np.array([item_index[r[1]] for r in raw], np.int64),
        rating=np.array([r[2] for r in raw], np.int64),
        time=np.array([r[3] for r in raw], np.int64),
        users=users, items=items,
    )


def adapter_options(spec: FeatureSpec) -> dict[str, int]:
    """The spec's ``adapter_options`` with defaults (:data:`OPTIONS`); an unknown or bad one raises ValueError."""
    options = dict(OPTIONS)
    unknown = set(spec.adapter_options) - set(OPTIONS)
    if unknown:
        raise ValueError(f"adapter_options: unknown option(s) {sorted(unknown)} for adapter 'amazon_reviews'; "
                         f"it takes {sorted(OPTIONS)}")
    options.update(spec.adapter_options)
    for key, value in options.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"adapter_options: {key} must be an integer >= 0, got {value!r}")
    return options


def build_rows(reviews: Reviews, negatives_per_positive: int = 4, negative_seed: int = 0) -> dict[str, Any]:
    """The rows as columns: every event's positive row, each followed by its sampled negatives.

    Users in index order, each user's events in time order (ties in file order). Returns a dict of
    the :data:`COLUMNS` (``history`` a list of int lists, the rest int64 arrays) plus ``split``.

    Raises:
      ValueError: if a user has reviewed so many items that fewer than ``negatives_per_positive``
        are left to sample.
    """
    rng = np.random.default_rng(negative_seed)
    num_items = len(reviews.items)
    order = np.lexsort((np.arange(len(reviews.user)), reviews.time, reviews.user))  # user, time, file order
    columns: dict[str, list] = {name: [] for name in (*COLUMNS, "split")}
    bounds = np.flatnonzero(np.diff(reviews.user[order])) + 1
    for events in np.split(order, bounds):
        user = int(reviews.user[events[0]])
        times, items = reviews.time[events], reviews.item[events]
        unseen = np.setdiff1d(np.arange(num_items), items)
        if len(unseen) < negatives_per_positive:
            raise ValueError(f"user '{reviews.users[user]}': reviewed {len(items)} of {num_items} items, fewer than "
                             f"negatives_per_positive={negatives_per_positive} are left to sample")
        # History of event j: the items of the events with a strictly earlier time (times are sorted).
        earlier = np.searchsorted(times, times, side="left")
        for j, event in enumerate(events):
            split = "test" if j == len(events) - 1 else "valid" if j == len(events) - 2 else "train"
            history = items[:earlier[j]].tolist()
            candidates = [int(items[j])]
            if negatives_per_positive:
                candidates += rng.choice(unseen, negatives_per_positive, replace=False).tolist()
            for k, item in enumerate(candidates):
                columns["user_id"].append(user)
                columns["item_id"].append(item)
                columns["history"].append(history)
                columns["history_length"].append(len(history))
                columns["rating"].append(int(reviews.rating[event]) if k == 0 else 0)
                columns["click"].append(1 if k == 0 else 0)
                columns["user_activity"].append(len(events))
                columns["time"].append(int(times[j]))
                columns["split"].append(split)
    return {name: (values if name in ("history", "split") else np.array(values, np.int64))
            for name, values in columns.items()}


def write_raw(spec: FeatureSpec, source: str, out_dir: str, **unused) -> list[str]:
    """Writes the rows of :func:`build_rows` as one CSV in the spec's raw layout.

    Args:
      spec: an Amazon reviews spec (``configs/datasets/amazon_musical_instruments.yaml``); its
        ``adapter_options`` set the negatives, its ``format`` the columns and delimiters.
      source: the folder of the review file, or the file.
      out_dir: folder for the output ``<spec.name>.csv`` (created if missing).
      **unused: the run's generic options (``rows``, ``seed``, ``malformed_rows``), which do not apply:
        the rows are the source's, the negatives' seed is ``adapter_options.negative_seed``.

    Returns:
      The one CSV path written.

    Raises:
      ValueError: on a bad review (file, line and key named), an unknown adapter option, a spec
        column this adapter does not produce, or more users or items than the spec's ``vocab_size``.
    """
    del unused
    if source is None:
        raise ValueError("amazon_reviews adapter: needs --source, the folder of the review file")
    options = adapter_options(spec)
    fmt = spec.raw_format
    unknown = set(fmt.columns) - set(COLUMNS) - ({fmt.split_column} if fmt.split_column else set())
    if unknown:
        raise ValueError(f"amazon_reviews adapter: spec columns {sorted(unknown)} are not produced; "
                         f"it writes {list(COLUMNS)} and the split column")
    reviews = read_reviews(source)
    for name, count in (("user_id", len(reviews.users)), ("item_id", len(reviews.items))):
        if name in fmt.columns:
            vocab = spec.feature(name).vocab_size
            if vocab is not None and vocab < count:
                raise ValueError(f"amazon_reviews adapter: feature '{name}' has vocab_size {vocab} but the source "
                                 f"has {count} distinct ids")
    rows = build_rows(reviews, **options)
    text = {name: (values if name == "split" else
                   [fmt.sequence_delimiter.join(map(str, h)) for h in values] if name == "history" else
                   values.astype(str).tolist())
            for name, values in rows.items()}
    if fmt.split_column:
        text[fmt.split_column] = rows["split"]
    lines = map(fmt.delimiter.join, zip(*(text[c] for c in fmt.columns)))
    return [write_lines(spec, out_dir, f"{spec.name}.csv", lines)]

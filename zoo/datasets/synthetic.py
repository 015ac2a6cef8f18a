"""Deterministic synthetic CTR logs with planted heterogeneous cohorts.

This is the embedded default dataset and the known answer for cohort discovery.

Planted structure (all draws from ``numpy.random.default_rng(seed)``):

* ``n_users`` users, each with a latent user value ``z ~ N(0, 1)`` exposed as
  the dense feature ``user_value``. The ``user_value`` cohort axis cuts it at
  the standard-normal quantiles 5/25/50/75/95 %, so about 5 % of users are in
  ``p00_05`` (the planted **tail**), 5 % in ``p95_100`` (the planted **head**)
  and 90 % in the four middle buckets (the **majority**). Rows sample users
  uniformly, so the row shares match the user shares.
* Users also have ``age_bucket`` (7), ``region`` (50) and ``recent_categories``
  (0-8 item categories they interacted with, drawn from their three favourite
  categories). Items have ``item_category`` (20), a latent quality and a
  ``price`` (standardized log price). Each row has ``hour`` (24), ``device`` (4)
  and a row-level ``discount`` in [0, 1].
* Clicks are Bernoulli(sigmoid(logit)) with a different P(y | x) per cohort:

  ======== =========================================================== ==========
  cohort   logit                                                       base rate
  ======== =========================================================== ==========
  majority -1.4 + A[age, cat] + 0.8 q - 0.4 price + 0.6 fav + 0.2 z      ~0.27
           + device effect
  head     -0.2 + 1.2 price + B[region mod 10, cat] + 0.8 q + 0.3 fav    ~0.45
  tail     -3.6 + 2.2 discount + 0.9 night + 0.3 fav                     ~0.12
  ======== =========================================================== ==========

  where ``A`` (7 x 20) and ``B`` (10 x 20) are fixed N(0, 1) affinity tables,
  ``fav`` is 1 when the item's category is in ``recent_categories``, and
  ``night`` is 1 for hours 0-5. Head users like expensive items (the price
  effect flips sign), tail users respond to discounts at night: their
  conditional click behaviour differs from the majority's, not just the base
  rate. A baseline model therefore predicts very different probability
  distributions for ``p95_100`` and ``p00_05``; they are the most contrasting
  pair on the ``user_value`` axis.
* ``malformed_rows`` extra corrupted lines (wrong column count, unparsable
  number, bad label, blank id, in rotation) are appended for the Beam job's
  dead-letter output to count.
"""

from __future__ import annotations


import numpy as np

from zoo.datasets import write_lines
from zoo.spec import FeatureSpec

TAIL_Z = -1.6448536  # standard-normal 5 % quantile
HEAD_Z = 1.6448536
NUM_CATEGORIES, NUM_AGES, NUM_REGIONS, NUM_HOURS, NUM_DEVICES = 20, 7, 50, 24, 4
MAX_RECENT = 8


def generate(rows: int = 200_000, seed: int = 0, n_users: int = 20_000, n_items: int = 2_000,
             contrast: bool = True) -> dict[str, np.ndarray]:
    """Generates the synthetic table as column arrays (``recent_categories`` as lists).

    Args:
      rows: number of rows.
      seed: seed of every draw; the same arguments give the same table.
      n_users: users (ids ``0..n_users-1``).
      n_items: items (ids ``0..n_items-1``).
      contrast: if False every cohort follows the majority's click model (the
        no-planted-contrast control for cohort discovery).
    """
    rng = np.random.default_rng(seed)
    affinity_age = rng.normal(size=(NUM_AGES, NUM_CATEGORIES))
    affinity_region = rng.normal(size=(10, NUM_CATEGORIES))
    device_effect = np.array([0.0, 0.3, -0.2, -0.5])

    z = rng.normal(size=n_users)
    age = rng.integers(0, NUM_AGES, n_users)
    region = rng.integers(0, NUM_REGIONS, n_users)
    favourites = np.stack([rng.choice(NUM_CATEGORIES, 3, replace=False) for _ in range(n_users)])
    item_cat = rng.integers(0, NUM_CATEGORIES, n_items)
    item_quality = rng.normal(scale=0.7, size=n_items)
    item_price = rng.normal(size=n_items)

    u = rng.integers(0, n_users, rows)
    i = rng.integers(0, n_items, rows)
    hour = rng.integers(0, NUM_HOURS, rows)
    device = rng.choice(NUM_DEVICES, rows, p=[0.4, 0.3, 0.25, 0.05])
    discount = rng.random(rows).round(4)
    seq_len = rng.integers(0, MAX_RECENT + 1, rows)
    picks = favourites[u[:, None], rng.integers(0, 3, (rows, MAX_RECENT))]
    recent = [picks[r, : seq_len[r]].tolist() for r in range(rows)]
    fav = np.array([item_cat[i[r]] in recent[r] for r in range(rows)], dtype=np.float64)

    zu, cat, q, price = z[u], item_cat[i], item_quality[i], item_price[i]
    majority = (-1.4 + affinity_age[age[u], cat] + 0.8 * q - 0.4 * price + 0.6 * fav + 0.2 * zu
                + device_effect[device])
    head = -0.2 + 1.2 * price + affinity_region[region[u] % 10, cat] + 0.8 * q + 0.3 * fav
    tail = -3.6 + 2.2 * discount + 0.9 * (hour < 6) + 0.3 * fav
    logit = majority
    if contrast:
        logit = np.where(zu >= HEAD_Z, head, np.where(zu < TAIL_Z, tail, majority))
    click = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return {
        "user_id": u, "item_id": i, "item_category": cat, "age_bucket": age[u],
        "region": region[u], "hour": hour, "device": device,
        "price": price.round(5), "discount": discount, "user_value": zu.round(5),
        "recent_categories": recent, "click": click,
    }


def write_raw(spec: FeatureSpec, source: str | None, out_dir: str, rows: int = 200_000,
              seed: int = 0, malformed_rows: int = 0, contrast: bool = True,
              **unused) -> list[str]:
    """Writes the table as one CSV in the spec's raw layout; returns its path."""
    del source, unused
    table = generate(rows=rows, seed=seed, contrast=contrast)
    fmt = spec.raw_format
    cols = []
    for name in fmt.columns:
        values = table[name]
        if name == "recent_categories":
            cols.append([fmt.sequence_delimiter.join(map(str, v)) for v in values])
        else:
            cols.append(values.astype(str).tolist())
    lines = [fmt.delimiter.join(fields) for fields in zip(*cols)]
    lines.extend(_malformed(lines, malformed_rows, fmt.delimiter, fmt.columns, spec.label))
    return [write_lines(spec, out_dir, f"{spec.name}.csv", lines)]


def _malformed(lines: list[str], count: int, delimiter: str, columns, label: str) -> list[str]:
    """Corrupted copies of real lines, rotating through four dead-letter reasons."""
    out = []
    for k in range(count):
        fields = lines[k % len(lines)].split(delimiter)
        reason = k % 4
        if reason == 0:
            fields = fields[:-1]  # wrong column count
        elif reason == 1:
            fields[columns.index("price")] = "12.x"  # unparsable number
        elif reason == 2:
            fields[columns.index(label)] = "2"  # label not 0/1
        else:
            fields[columns.index("item_id")] = ""  # blank id
        out.append(delimiter.join(fields))
    return out

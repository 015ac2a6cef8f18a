"""MovieLens-100K adapter: ``u.data`` joined with ``u.user`` and ``u.item`` as CTR rows.

``source`` is the path of the GroupLens ``ml-100k`` folder (``u.data``, ``u.user``, ``u.item``,
``u.occupation``). One output row per rating, in ``u.data`` order, so the output is
deterministic. The adapter writes the raw ``rating`` (1..5 stars); the dataset YAML derives the label
``click`` from it (``label: {name: click, column: rating, positive: ">= 4"}``: 55,375 of the 100,000
ratings, 55.4 %), so another threshold needs no code.

Column mapping (every id is 0-based and lies in ``0..vocab_size-1`` of
``configs/datasets/movielens100k.yaml``):

================ ===========================================================================
column           value
================ ===========================================================================
user_id          raw user id - 1 (raw 1..943 -> 0..942)
item_id          raw movie id - 1 (raw 1..1682 -> 0..1681)
age_bucket       ML-1M age groups: 0 under 18, 1 18-24, 2 25-34, 3 35-44, 4 45-49, 5 50-55,
                 6 56+
gender           0 M, 1 F
occupation       index of the occupation in ``u.occupation`` order (:data:`OCCUPATIONS`,
                 0 administrator .. 20 writer)
zip_region       first digit of the zip code (0..9); 10 for non-numeric (Canadian) zips
genres           sequence of the movie's genre ids in ``u.genre`` order (0 unknown, 1 Action,
                 .. 18 Western), ascending; a movie has 1..6 genres, so ``max_length: 6``
                 truncates nothing
release_decade   0 unknown release date (one movie), 1 1920s (or earlier), 2 1930s, ..,
                 8 1990s (or later)
hour             hour of day of the rating's unix time, UTC (0..23)
weekday          weekday of the rating's unix time, UTC (0 Monday .. 6 Sunday, as
                 ``datetime.weekday``)
user_activity    number of ratings the user has in the whole ``u.data`` (20..737); a dense
                 column with ``input: false``: it carries the user-activity cohort axis only
                 (as a model input it would leak the future size of the user's history)
rating           the raw rating, 1..5 stars (the YAML's label rule reads it)
================ ===========================================================================

Cohort axes (declared in the YAML; listed here for reference):

* ``age_bucket``: one cohort per age group (``under_18`` .. ``age_56_plus``).
* ``gender``: ``male`` / ``female``.
* ``occupation``: one cohort per occupation, named as in ``u.occupation``.
* ``user_activity``: ordinal on ``user_activity`` with boundaries ``[24, 243]``:
  ``light`` (< 24 ratings: the bottom 10 % of users, 100 of 943), ``medium`` and ``heavy``
  (>= 243 ratings: the top 10 % of users, 95 of 943). ``c2al`` defaults to head ``heavy``,
  tail ``light``.

The split is the spec default: a stable hash of ``user_id`` (80/10/10 by users), so valid and
test users are unseen in training.
"""

from __future__ import annotations

import os

from zoo.datasets import write_lines
from zoo.spec import FeatureSpec

NUM_USERS, NUM_ITEMS, NUM_GENRES = 943, 1682, 19
AGE_LOWER_BOUNDS = (18, 25, 35, 45, 50, 56)  # age_bucket = number of bounds <= age
AGE_BUCKETS = ("under_18", "age_18_24", "age_25_34", "age_35_44", "age_45_49", "age_50_55",
               "age_56_plus")
GENDERS = {"M": 0, "F": 1}
OCCUPATIONS = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
    "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer",
    "retired", "salesman", "scientist", "student", "technician", "writer",
)
NON_NUMERIC_ZIP = 10
UNKNOWN_DECADE = 0


def age_bucket(age: int) -> int:
    """ML-1M age group of an age in years (0 under 18 .. 6 56+)."""
    return sum(age >= b for b in AGE_LOWER_BOUNDS)


def zip_region(zip_code: str) -> int:
    """First digit of a US zip code; :data:`NON_NUMERIC_ZIP` for any other code."""
    zip_code = zip_code.strip()
    return int(zip_code[0]) if zip_code[:1].isdigit() else NON_NUMERIC_ZIP


def release_decade(date: str) -> int:
    """Decade id of a ``dd-Mon-yyyy`` release date: 0 unknown, 1 1920s (or earlier) .. 8 1990s."""
    date = date.strip()
    if not date:
        return UNKNOWN_DECADE
    year = int(date[-4:])
    return min(max((year - 1910) // 10, 1), 8)


def hour_and_weekday(unix_time: int) -> tuple[int, int]:
    """UTC hour of day (0..23) and weekday (0 Monday .. 6 Sunday) of a unix time."""
    # 1970-01-01 was a Thursday (weekday 3).
    return (unix_time // 3600) % 24, (unix_time // 86400 + 3) % 7


def read_users(source: str) -> dict[int, dict[str, int]]:
    """``u.user`` as raw user id -> {age_bucket, gender, occupation, zip_region}."""
    occupation_ids = {name: i for i, name in enumerate(_read_occupations(source))}
    users = {}
    with open(os.path.join(source, "u.user"), encoding="latin-1") as fh:
        for line in fh:
            if not line.strip():
                continue
            user, age, gender, occupation, zip_code = line.rstrip("\n").split("|")
            users[int(user)] = {
                "age_bucket": age_bucket(int(age)),
                "gender": GENDERS[gender],
                "occupation": occupation_ids[occupation],
                "zip_region": zip_region(zip_code),
            }
    return users


def read_items(source: str) -> dict[int, dict[str, object]]:
    """``u.item`` as raw movie id -> {genres: [genre ids], release_decade}."""
    items = {}
    with open(os.path.join(source, "u.item"), encoding="latin-1") as fh:
        for line in fh:
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("|")
            flags = fields[-NUM_GENRES:]
            items[int(fields[0])] = {
                "genres": [g for g, flag in enumerate(flags) if flag == "1"],
                "release_decade": release_decade(fields[2]),
            }
    return items


def read_ratings(source: str) -> list[tuple[int, int, int, int]]:
    """``u.data`` as (user, item, rating, unix time) tuples of raw ids, in file order."""
    with open(os.path.join(source, "u.data")) as fh:
        return [tuple(int(x) for x in line.split("\t")) for line in fh if line.strip()]


def write_raw(spec: FeatureSpec, source: str, out_dir: str, **unused) -> list[str]:
    """Writes every rating as one CSV row in the spec's raw layout.

    Args:
      spec: the ``movielens100k`` spec; its ``format`` decides column order and delimiters.
      source: path of the ``ml-100k`` folder.
      out_dir: folder for the output ``<spec.name>.csv`` (created if missing).
      **unused: other adapter options, ignored.

    Returns:
      The one CSV path written.

    Raises:
      ValueError: if the source does not look like MovieLens-100K (unknown occupation list,
        a rating for a missing user or movie) or the spec names a column this adapter does
        not produce.
    """
    del unused
    users, items, ratings = read_users(source), read_items(source), read_ratings(source)
    activity: dict[int, int] = {}
    for user, _, _, _ in ratings:
        activity[user] = activity.get(user, 0) + 1

    fmt = spec.raw_format
    unknown = set(fmt.columns) - {
        "rating", "user_id", "item_id", "age_bucket", "gender", "occupation", "zip_region",
        "genres", "release_decade", "hour", "weekday", "user_activity",
    }
    if unknown:
        raise ValueError(f"movielens100k adapter: spec columns {sorted(unknown)} are not produced")
    seq_delim = fmt.sequence_delimiter
    genre_text = {i: seq_delim.join(map(str, it["genres"])) for i, it in items.items()}

    lines = []
    for user, item, rating, unix_time in ratings:
        if user not in users or item not in items:
            raise ValueError(
                f"movielens100k adapter: rating of unknown user {user} or movie {item}"
            )
        u, it = users[user], items[item]
        hour, weekday = hour_and_weekday(unix_time)
        row = {
            "rating": rating,
            "user_id": user - 1,
            "item_id": item - 1,
            "age_bucket": u["age_bucket"],
            "gender": u["gender"],
            "occupation": u["occupation"],
            "zip_region": u["zip_region"],
            "genres": genre_text[item],
            "release_decade": it["release_decade"],
            "hour": hour,
            "weekday": weekday,
            "user_activity": activity[user],
        }
        lines.append(fmt.delimiter.join(str(row[c]) for c in fmt.columns))

    return [write_lines(spec, out_dir, f"{spec.name}.csv", lines)]


def _read_occupations(source: str) -> tuple[str, ...]:
    with open(os.path.join(source, "u.occupation"), encoding="latin-1") as fh:
        names = tuple(line.strip() for line in fh if line.strip())
    if names != OCCUPATIONS:
        raise ValueError(
            f"movielens100k adapter: {source}/u.occupation lists {names}, expected {OCCUPATIONS} "
            "(the occupation ids and cohorts in the YAML assume that order)"
        )
    return names

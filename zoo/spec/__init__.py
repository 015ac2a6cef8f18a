"""The feature spec: one dataset YAML from which every other view is derived.

A spec declares each feature once. From it, with no second copy anywhere:

* the Beam writer's raw-row parsing and ``tf.train.Example`` encoding
  (:meth:`FeatureSpec.parse_raw_row`, :meth:`FeatureSpec.encode_example`),
* the reader's ``tf.io.parse_example`` spec (:meth:`FeatureSpec.parse_spec`),
* the model's named ``keras.Input``s and embedding tables
  (:meth:`FeatureSpec.keras_inputs`, :attr:`FeatureSpec.categorical`),
* the serving signature (:meth:`FeatureSpec.serving_signature`).

Feature kinds
-------------
``categorical``
    One int64 id per row. Either ``vocab_size: V`` (ids ``0..V-1`` are valid;
    any other id is out of vocabulary and maps to the explicit OOV row ``V``,
    so the table has ``V + 1`` rows) or ``hash_buckets: H`` (the row is
    ``id mod H``; the table has ``H`` rows and nothing is out of range).
``dense``
    One float32 per row. ``default`` fills a blank raw value; without a
    default a blank is a malformed row.
``sequence``
    Up to ``max_length`` int64 ids, padded with ``PAD_ID`` (-1) to exactly
    ``max_length``. Ids come from ``vocab_size`` / ``hash_buckets`` of their
    own or from the table named by ``share_embedding``. Longer raw sequences
    are handled by ``truncation``: ``keep_last`` (default) or ``keep_first``
    (both counted by the Beam job), or ``error`` (the row is dead-lettered).

Every feature has ``input: true`` by default; ``input: false`` carries a
column in the records (for cohort axes, say) without making it a model or
serving input.

Cohort axes
-----------
An axis maps one feature to a small set of named cohorts:

* ordinal: ``boundaries: [b0, b1, ...]`` (strictly increasing) and
  ``cohorts`` with ``len(boundaries) + 1`` names; a value ``v`` falls in
  cohort ``i`` where ``b_{i-1} <= v < b_i``. Only on a dense or raw-integer
  feature: the ids of a vocabulary feature are frequency ranks and those of
  a hashed one buckets, so ranges of them mean nothing (a spec error).
* categorical: ``values: {cohort_name: [id, ...], ...}``; ids not listed fall
  in the cohort named by ``other`` (default ``"other"``), which is reported
  like any other cohort. For a feature whose ids are mapped from raw values
  (``raw_type: string | hex``, or a vocabulary) the lists hold raw values,
  e.g. ``values: {female: [F], male: [M]}``, normalized like the row parser
  (stripped; hex lower-cased) and resolved to stored ids: hash buckets at
  once (two cohorts' values in one bucket are a spec error; an unlisted value
  in a listed bucket counts in that cohort, since the ids cannot tell them
  apart), vocabulary ids once the vocabulary is built (the Beam job; a listed
  value the vocabulary does not keep is an error naming it). The resolved
  ``spec.json`` records both (``values`` and ``ids``).

Raw column types, vocabularies and transforms
---------------------------------------------
The model only ever sees int64 ids and float32 dense values; these keys say how
a raw text column becomes one (all optional, applied by the Beam writer):

``raw_type`` (categorical and sequence features)
    ``int`` (default: the text is the id), ``string`` (any text token) or
    ``hex`` (a hexadecimal token, e.g. Criteo's ``68fd1e64``; validated and
    lower-cased). String and hex tokens are stripped; a blank token is the
    token ``""`` (its own category). They need ``hash_buckets: H`` (the id is
    :func:`hash_token` ``(token) mod H``) or ``vocabulary``.
``vocabulary: {min_count: 1, max_size: null, splits: [train]}``
    The vocabulary is built from the data by the Beam job's first pass (tokens
    of the rows in ``splits`` seen at least ``min_count`` times, at most
    ``max_size`` of them, most frequent first, ties by token) and written to
    ``<output>/vocab/<table>.txt`` (one token per line, line number = id). The
    resolved ``spec.json`` records ``vocab_size`` (ids ``0..V-1``; every other
    token gets the OOV id ``V``) and ``vocabulary.file`` (relative to the data
    directory). A table shared through ``share_embedding`` has one vocabulary
    counted over all its features. ``int`` ids may have a vocabulary too (it
    maps sparse raw ids to dense ones).
``unknown``
    ``oov`` (default: tokens outside the vocabulary get the OOV id, int ids
    outside ``vocab_size`` are stored as given; both are counted in
    ``stats.json``) or ``error`` (such a row is dead-lettered with reason
    ``unknown_category``).
``transforms`` (dense features)
    An ordered list applied after the ``default`` fill: ``log1p`` and
    ``{clip: [lo, hi]}`` (``null`` = unbounded). The stored value (the one the
    model, the cohort axes and the statistics see) is the transformed one; a
    non-finite result is a ``bad_number`` dead letter.

Raw format
----------
``format: {columns: [...], delimiter: ",", header: true, sequence_delimiter: " ", split_column: null,
quote: '"', multiline: false}`` says how the Beam writer reads the raw files (``type: libfm`` for libFM
lines, which take no quoting). Delimited records follow RFC 4180 (read with the standard :mod:`csv`
module, :func:`zoo.spec.rows.split_quoted`): a field starting with ``quote`` ends at the next lone
quote and may hold the delimiter; ``""`` inside it is one quote; a quote inside an unquoted field is
a plain character; text after a closing quote or a quote left open is a ``bad_quoting`` dead letter.
``quote: null`` splits at every delimiter. With ``multiline: true`` quoted fields may also hold line
breaks (stored as ``\\n``): a record then ends at a line break outside quotes, and each input file is
read by one reader instead of being split into ranges (a reader starting mid-file cannot tell a
quoted line break from a record end), so shard large inputs into several files. A quote left open in
multiline mode runs on to the end of the file and becomes one dead letter; without ``multiline``
each line is one record.

Top level: ``label: <column>`` names the one label (0/1), or ``labels: [<primary>, <other>, ...]``
(not both) declares a multi-task dataset: one 0/1 column per task, the first the primary task
(``FeatureSpec.label``; ``FeatureSpec.labels`` lists all). Every label is stored in the TFRecords
and parsed by the reader; a value other than 0/1 in any of them dead-letters the row
(``bad_label``, the message names the label); ``stats.json`` adds positives per label (``labels``,
overall and per split). Label names are letters, digits and underscores, unique and not feature
names: label ``<l>`` (not the primary) is the model output ``task_<l>`` and the served output
``probability_<l>`` (the primary's are ``primary`` and ``probability``).

A label can also be derived from a raw column that is not 0/1, in the YAML alone: an entry
``{name: click, column: rating, positive: ">= 4"}`` (a number compared with a threshold: ``>=``,
``>``, ``<=``, ``<``, ``==``, ``!=``; a non-number is a ``bad_label`` dead letter) or ``{column:
answer, map: {"yes": 1, "no": 0}}`` (the stripped text looked up; a value outside the map is an
``unmapped_label`` dead letter). ``name`` defaults to the column; the column is read, the label is
stored under its name (``FeatureSpec.label_rules``). Quote map keys such as ``"yes"``: YAML reads an
unquoted yes/no as a boolean, which the spec refuses.

``split_by: line`` splits rows by a stable hash of the raw line
(datasets without a user id, e.g. Criteo) instead of the user id;
``format.type: libfm`` reads libFM/libSVM lines (``label idx:val ...``, one
token per feature in column order: categorical features take ``idx``, dense
features ``val``; label ``-1`` means 0); ``aux_labels: {axis, head, tail,
dtype}`` is recorded by :mod:`beam_jobs.add_aux_labels` for shards that carry
``aux/head`` and ``aux/tail``; ``oracle: <feature>`` names the column holding the
true click probability P(y=1|x) (known for synthetic data): a ``dense``
feature with ``input: false``, no ``transforms`` and no ``default``, carried
into the TFRecords unchanged (``FeatureSpec.oracle``; ``zoo.train`` reports the
oracle's metrics beside the variants'); ``adapter_options: {...}`` are keyword
options of the spec's ``adapter`` (how the adapter builds the rows, e.g. the
Amazon adapter's sampled negatives; ``FeatureSpec.adapter_options``), checked
by the adapter, which rejects an option it does not take by name.

Errors in a spec raise :class:`SpecError` naming the feature (or axis) and
the problem.

Modules
-------
:mod:`zoo.spec.schema` (the parts of a spec and its constants), :mod:`zoo.spec.validation` (a
mapping checked into those parts), :mod:`zoo.spec.feature_spec` (:class:`FeatureSpec` and its
views), :mod:`zoo.spec.rows` (raw-row parsing), :mod:`zoo.spec.hashing` (stable hashes and splits),
:mod:`zoo.spec.example_codec` (the ``tf.train.Example`` wire format without TensorFlow) and
:mod:`zoo.spec.loader` (:func:`load_spec`). None of them imports TensorFlow or Keras at import time.
"""

from zoo.spec.example_codec import decode_examples, example_class
from zoo.spec.feature_spec import FeatureSpec
from zoo.spec.hashing import hash_token, hash_tokens, stable_hash, stable_hash_array
from zoo.spec.loader import load_spec, locate_spec_file
from zoo.spec.rows import RowError, apply_transforms, parse_token
from zoo.spec.schema import (AUX_KEY_PREFIX, COHORT_KEY_PREFIX, PAD_ID, SPLITS, TASK_PREFIX, CohortAxis, Feature,
                             LabelRule, RawFormat, SpecError, Vocabulary)

__all__ = [
    "AUX_KEY_PREFIX",
    "COHORT_KEY_PREFIX",
    "PAD_ID",
    "SPLITS",
    "TASK_PREFIX",
    "CohortAxis",
    "Feature",
    "FeatureSpec",
    "LabelRule",
    "RawFormat",
    "RowError",
    "SpecError",
    "Vocabulary",
    "apply_transforms",
    "decode_examples",
    "example_class",
    "hash_token",
    "hash_tokens",
    "load_spec",
    "locate_spec_file",
    "parse_token",
    "stable_hash",
    "stable_hash_array",
]

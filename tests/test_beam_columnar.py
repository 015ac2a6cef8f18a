"""The batched building blocks of the Beam jobs against their one-row references.

* ``beam_jobs.columnar.BatchParser`` == ``FeatureSpec.parse_raw_row`` line by line (good rows, their
  split and cohorts, every dead letter with its reason and message, statistics), on fuzzed rows of a
  spec using every column type, vocabularies, hashing and transforms, and on libFM lines;
* ``FeatureSpec.encode_examples`` == ``encode_example`` byte for byte; TensorFlow reads it back;
* ``hash_tokens`` == ``hash_token``; TFRecord framing == TensorFlow's reader and crcmod's CRC-32C;
* ``fileio.ReadLineChunks`` reads exactly the lines ``ReadFromText`` reads, however the file is split.
"""

from __future__ import annotations

import collections
import copy
import os
import random
import zlib

import numpy as np
import pytest

from beam_jobs import fileio, tfrecord
from beam_jobs.columnar import BatchParser, StatsLayout
from zoo.spec import (PAD_ID, SPLITS, FeatureSpec, RowError, hash_token, hash_tokens, stable_hash)

RICH_SPEC = {
    "name": "rich",
    "label": "y",
    "user_id": "u",
    "split": {"train": 0.6, "valid": 0.2, "test": 0.2},
    "format": {"delimiter": ",", "header": True, "sequence_delimiter": " ",
               "columns": ["y", "u", "item", "price", "disc", "hist", "tags", "cat", "hx", "val", "dev", "sq"]},
    "defaults": {"embedding_dim": 4},
    "features": [
        {"name": "u", "kind": "categorical", "vocab_size": 50},
        {"name": "item", "kind": "categorical", "vocab_size": 10, "unknown": "error"},
        {"name": "price", "kind": "dense", "transforms": [{"clip": [None, 100.0]}, "log1p"]},
        {"name": "disc", "kind": "dense", "default": 0.5, "transforms": [{"clip": [0, 1]}]},
        {"name": "hist", "kind": "sequence", "max_length": 3, "vocab_size": 10},
        {"name": "tags", "kind": "sequence", "max_length": 2, "raw_type": "string", "hash_buckets": 7,
         "truncation": "error"},
        {"name": "cat", "kind": "categorical", "raw_type": "string",
         "vocabulary": {"min_count": 2, "file": "vocab/cat.txt"}, "vocab_size": 3},
        {"name": "hx", "kind": "categorical", "raw_type": "hex", "hash_buckets": 11},
        {"name": "val", "kind": "dense", "input": False},
        {"name": "dev", "kind": "categorical", "vocab_size": 4},
        {"name": "sq", "kind": "sequence", "max_length": 2, "share_embedding": "cat", "truncation": "keep_first"},
    ],
    "cohort_axes": [
        {"name": "band", "feature": "val", "boundaries": [0.0, 1.0], "cohorts": ["low", "mid", "high"]},
        {"name": "device", "feature": "dev", "values": {"desktop": [0], "mobile": [1]}, "other": "other"},
        {"name": "item_band", "feature": "item", "boundaries": [5], "cohorts": ["small", "large"]},
    ],
}
RICH_VOCABS = {"cat": {"a": 0, "": 1, "Bb": 2}}
TRICKY = ["", " ", "  7 ", "nan", "inf", "-inf", "1e39", "-1", "0", "-0", "+3", "007", "1_0", "٣", "3.5", "abc",
          "9223372036854775807", "9223372036854775808", "-9223372036854775809", "0x1f", "AbC", "ff", "FF",
          "a", "Bb", " a", "a b", "x y z", "-1.5", "2.5e2", "1e-320", "\u00a05", "-0.0", "1 2 3 4", "2 -1",
          "deadBEEF", "g1", "1", "\u00a0", "\t", "train", "valid", " test"]


def _good_row(rng: random.Random) -> list[str]:
    return [
        rng.choice(["0", "1", "1.0", "0.0"]),                 # y
        str(rng.randrange(0, 60)),                             # u (some OOV)
        str(rng.randrange(0, 10)),                             # item
        rng.choice(["1.5", "-2", "250", "0", "3.25", "-0.5", "1e2"]),  # price (clip hi, log1p)
        rng.choice(["0.25", "", "1.5", "-1", "0.75"]),         # disc
        " ".join(str(rng.randrange(0, 14)) for _ in range(rng.randrange(0, 5))),  # hist
        " ".join(rng.choice(["x", "yy", "z z", "ü"]) for _ in range(rng.randrange(0, 3))),  # tags
        rng.choice(["a", "Bb", "", "c", "a"]),                 # cat (c is OOV)
        rng.choice(["68fd1e64", "DEADbeef", "", "0", "abc"]),  # hx
        rng.choice(["-0.5", "0.5", "1.5", "0", "1"]),          # val
        str(rng.randrange(0, 4)),                              # dev
        " ".join(rng.choice(["a", "Bb", "q"]) for _ in range(rng.randrange(0, 4))),  # sq
    ]


def _lines(rng: random.Random, n: int, ncols: int, good: callable) -> list[bytes]:
    out = []
    for _ in range(n):
        fields = good(rng)
        r = rng.random()
        if r < 0.35:
            for _ in range(rng.randrange(1, 3)):
                fields[rng.randrange(ncols)] = rng.choice(TRICKY)
        elif r < 0.38:
            fields = fields[:-1]
        elif r < 0.40:
            fields = fields + ["1"]
        line = ",".join(fields).encode("utf-8")
        if rng.random() < 0.02:
            line = line.replace(b",", b",\xff", 1)
        out.append(line)
    return out


def _reference(spec: FeatureSpec, lines: list[bytes], vocabs) -> tuple[collections.Counter, collections.Counter, list]:
    """parse_raw_row + encode_example per line: (Counter of (split, bytes)), Counter of dead letters, rows."""
    good, dead, rows = collections.Counter(), collections.Counter(), []
    for raw in lines:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            dead[(raw.decode("utf-8", errors="replace"), "bad_encoding", str(err))] += 1
            continue
        try:
            row = spec.parse_raw_row(spec.split_line(text), vocabs)
        except RowError as err:
            dead[(text, err.reason, str(err))] += 1
            continue
        split = row.get("__split__") or (spec.split_of_line(raw) if spec.split_by == "line" else spec.split_of(row))
        good[(split, spec.encode_example(row))] += 1
        rows.append((split, row))
    return good, dead, rows


def _batched(spec: FeatureSpec, lines: list[bytes], vocabs):
    parser = BatchParser(spec, vocabs)
    batch = parser.parse_lines(lines)
    records = spec.encode_examples(parser.example_columns(batch))
    good = collections.Counter(zip([SPLITS[i] for i in batch.split.tolist()], records))
    return good, collections.Counter(batch.dead), parser, batch


def _reference_stats(spec: FeatureSpec, rows) -> list[int]:
    layout = StatsLayout(spec)
    acc = [0] * layout.size
    for split, row in rows:
        pos = int(row[spec.label] == 1.0)
        acc[0] += 1
        acc[1] += pos
        s = 2 + 2 * SPLITS.index(split)
        acc[s] += 1
        acc[s + 1] += pos
        for axis, offset in zip(spec.cohort_axes, layout.axis_offsets):
            i = offset + 2 * axis.cohort_id(row[axis.feature])
            acc[i] += 1
            acc[i + 1] += pos
        for k, f in enumerate(layout.id_features):
            v = row[f.name]
            if f.kind == "categorical":
                acc[layout.oov_offset + k] += f.is_out_of_vocab(v)
            else:
                kept = spec.pad_sequence(f, v)[0][: min(len(v), f.max_length)]
                acc[layout.oov_offset + k] += sum(f.is_out_of_vocab(x) for x in kept)
        for k, f in enumerate(layout.seq_features):
            acc[layout.trunc_offset + k] += spec.pad_sequence(f, row[f.name])[1]
    return acc


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_parser_equals_parse_raw_row_on_fuzzed_rows(seed):
    spec = FeatureSpec.from_dict(RICH_SPEC)
    rng = random.Random(seed)
    lines = _lines(rng, 1500, len(spec.raw_format.columns), _good_row)
    ref_good, ref_dead, ref_rows = _reference(spec, lines, RICH_VOCABS)
    good, dead, parser, batch = _batched(spec, lines, RICH_VOCABS)
    assert good == ref_good
    assert dead == ref_dead
    reasons = {r for _, r, _ in ref_dead}
    assert reasons >= {"wrong_column_count", "bad_number", "bad_label", "missing_value", "sequence_too_long",
                       "unknown_category", "bad_encoding"}, reasons
    assert sum(ref_good.values()) > 600  # most rows are good: the fast path is exercised
    cohorts = parser.cohort_ids(batch)
    assert StatsLayout(spec).batch_counts(batch, cohorts) == _reference_stats(spec, ref_rows)


LABEL_RULES = {
    "threshold": ({"name": "liked", "column": "y", "positive": ">= 4"},
                  ["1", "2", "3", "3.99", "4", "4.0", " 5 ", "5", "40", "-4", "1e1"]),
    "map": ({"name": "liked", "column": "y", "map": {"yes": 1, "no": 0, "1": 1, "maybe": 0}},
            ["yes", "no", " yes", "no ", "1", "maybe", "Yes", "0"]),  # 'Yes' and '0' are not in the map
}


@pytest.mark.parametrize("rule", sorted(LABEL_RULES))
def test_label_rules_fast_path_equals_parse_raw_row(rule):
    """A label derived in the YAML (a threshold on a number, or a value map) gives the same labels and
    the same dead letters (``bad_label``, ``unmapped_label``) on the column path as row by row."""
    declaration, texts = LABEL_RULES[rule]
    spec = FeatureSpec.from_dict({**RICH_SPEC, "label": declaration})
    assert spec.label == "liked" and spec.label_column("liked") == "y"

    def good(rng):
        return [rng.choice(texts)] + _good_row(rng)[1:]

    lines = _lines(random.Random(3), 1500, len(spec.raw_format.columns), good)
    ref_good, ref_dead, ref_rows = _reference(spec, lines, RICH_VOCABS)
    got_good, got_dead, parser, batch = _batched(spec, lines, RICH_VOCABS)
    assert got_good == ref_good and got_dead == ref_dead
    labels = collections.Counter(row["liked"] for _, row in ref_rows)
    assert labels[0.0] > 100 and labels[1.0] > 100
    reasons = collections.Counter(r for _, r, _ in ref_dead)
    assert reasons["unmapped_label" if rule == "map" else "bad_label"] > 20, reasons
    expected = {"threshold": lambda t: float(float(t) >= 4), "map": lambda t: {"yes": 1.0, "no": 0.0, "1": 1.0,
                                                                               "maybe": 0.0}[t.strip()]}[rule]
    for text in texts:
        try:
            want = expected(text)
        except (KeyError, ValueError):
            with pytest.raises(RowError):
                spec.parse_raw_row(spec.split_line(f"{text},1,2,1.5,0.25,,,a,0,0.5,1,"), RICH_VOCABS)
            continue
        row = spec.parse_raw_row(spec.split_line(f"{text},1,2,1.5,0.25,,,a,0,0.5,1,"), RICH_VOCABS)
        assert row["liked"] == want, text


def test_batch_parser_token_mode_keeps_tokens():
    spec = FeatureSpec.from_dict({**RICH_SPEC, "features": [
        {**f, "vocabulary": {"min_count": 2}, "vocab_size": None} if f["name"] == "cat" else f
        for f in RICH_SPEC["features"]]} | {})
    spec = FeatureSpec.from_dict({k: v for k, v in spec.to_dict().items()})
    assert spec.needs_vocabularies
    rng = random.Random(5)
    lines = _lines(rng, 400, len(spec.raw_format.columns), _good_row)
    parser = BatchParser(spec, None)
    batch = parser.parse_lines(lines)
    expected = []
    for raw in lines:
        try:
            row = spec.parse_raw_row(spec.split_line(raw.decode("utf-8")))
        except (RowError, UnicodeDecodeError):
            continue
        expected.append((row["cat"], tuple(row["sq"])))
    assert collections.Counter(zip(batch.values["cat"], map(tuple, batch.values["sq"]))) == collections.Counter(expected)
    assert all(isinstance(t, str) for t in batch.values["cat"])


def test_split_by_line_and_libfm_format():
    spec = FeatureSpec.from_dict({
        "name": "fm", "label": "y", "split_by": "line",
        "format": {"type": "libfm", "header": False, "columns": ["y", "a", "b", "x"]},
        "defaults": {"embedding_dim": 2},
        "features": [{"name": "a", "kind": "categorical", "vocab_size": 100},
                     {"name": "b", "kind": "categorical", "raw_type": "string", "hash_buckets": 13},
                     {"name": "x", "kind": "dense", "default": 0.0}],
    })
    assert spec.split_line("-1 3:1 u7:1 9:0.25") == ["0", "3", "u7", "0.25"]
    with pytest.raises(RowError, match="libFM token '9' is not idx:val"):
        spec.split_line("1 3:1 u7:1 9")
    rng = random.Random(3)
    lines = []
    for _ in range(800):
        toks = [rng.choice(["1", "-1", "0", "+1", "2"]), f"{rng.randrange(0, 120)}:1",
                f"{rng.choice(['u1', 'u2', 'zz', ''])}:1", f"{rng.randrange(0, 9)}:{rng.choice(['0.5', '', 'x', '1e3'])}"]
        if rng.random() < 0.05:
            toks = toks[:-1]
        if rng.random() < 0.05:
            toks[1] = "17"
        lines.append(" ".join(toks).encode())
    ref_good, ref_dead, _ = _reference(spec, lines, {})
    good, dead, _, _ = _batched(spec, lines, {})
    assert good == ref_good and dead == ref_dead
    assert {r for _, r, _ in ref_dead} >= {"bad_label", "wrong_column_count", "bad_number"}
    # split_by line: the split is the stable hash of the raw line bytes.
    line = lines[0]
    assert spec.split_of_line(line) == spec.split_from_hash(stable_hash(zlib.crc32(line)))


def test_given_split_column_fast_path():
    raw = copy.deepcopy(RICH_SPEC)
    raw["format"]["columns"] = raw["format"]["columns"] + ["fold"]
    raw["format"]["split_column"] = "fold"
    spec = FeatureSpec.from_dict(raw)
    rng = random.Random(9)
    lines = _lines(rng, 600, len(spec.raw_format.columns),
                   lambda r: _good_row(r) + [r.choice(["train", "valid", "test", " test", "dev"])])
    ref_good, ref_dead, _ = _reference(spec, lines, RICH_VOCABS)
    good, dead, _, _ = _batched(spec, lines, RICH_VOCABS)
    assert good == ref_good and dead == ref_dead
    assert "bad_split" in {r for _, r, _ in ref_dead}


def test_encode_examples_is_byte_identical_and_read_by_tensorflow():
    import tensorflow as tf

    spec = FeatureSpec.from_dict(RICH_SPEC)
    rows = []
    for i in range(300):
        rows.append({"y": float(i % 2), "u": i - 150, "item": (i * 7) % 13, "price": i * 0.1 - 3,
                     "disc": 0.5, "hist": list(range(i % 6)), "tags": [i % 7] * (i % 3), "cat": i % 4,
                     "hx": i % 11, "val": (i % 5) * 0.5 - 1, "dev": i % 4, "sq": [1] * (i % 3),
                     "__split__": "train"})
    rows[0]["u"] = -(2**63)
    rows[1]["u"] = 2**63 - 1
    expected = [spec.encode_example(r) for r in rows]
    assert spec.encode_examples(spec.example_columns(rows)) == expected
    assert spec.encode_examples(spec.example_columns([])) == []
    # Deterministic (sorted keys), and what TensorFlow serializes deterministically too.
    assert tf.train.Example.FromString(expected[5]).SerializeToString(deterministic=True) == expected[5]
    parsed = tf.io.parse_example(expected[:3], spec.parse_spec("all"))
    assert parsed["u"].numpy()[:, 0].tolist() == [-(2**63), 2**63 - 1, -148]
    assert parsed["hist"].numpy()[2].tolist() == [0, 1, PAD_ID]


def test_hash_tokens_and_framing():
    import crcmod.predefined
    import tensorflow as tf

    tokens = ["", "a", "abcdefgh", "abcdefghi", "héllo wörld, a longer token", "68fd1e64", "x\x00y"]
    assert hash_tokens(tokens).tolist() == [hash_token(t) for t in tokens]
    assert hash_token("a") == hash_token("a") != hash_token("b")
    crc = crcmod.predefined.mkPredefinedCrcFun("crc-32c")
    rng = np.random.default_rng(0)
    records = [rng.integers(0, 256, size=int(n), dtype=np.uint8).tobytes() for n in rng.integers(0, 300, 200)]
    records[:3] = [b"", b"a", b"abcd"]
    assert [tfrecord.crc32c(r) for r in records[:20]] == [crc(r) for r in records[:20]]
    lengths = np.array([len(r) for r in records])
    flat = np.frombuffer(b"".join(records), np.uint8)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    assert tfrecord.crc32c_flat(flat, starts, lengths).tolist() == [crc(r) for r in records]
    blob = tfrecord.frame(records)
    assert tfrecord.unframe(blob) == records
    with pytest.raises(ValueError, match="CRC mismatch"):
        tfrecord.unframe(blob[:-1] + bytes([blob[-1] ^ 1]))
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"framing_{os.getpid()}.tfrecord.gz")
    with open(path, "wb") as fh:  # two gzip members: one gzip stream to every reader
        fh.write(fileio.gzip_member(tfrecord.frame(records[:50]), 1) + fileio.gzip_member(tfrecord.frame(records[50:])))
    try:
        assert [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type="GZIP")] == records
    finally:
        os.remove(path)


def _text_lines(path: str, header: int) -> list[bytes]:
    from apache_beam.coders import BytesCoder
    from apache_beam.io import source_test_utils
    from apache_beam.io.textio import _TextSource

    src = _TextSource(path, 0, "auto", True, BytesCoder(), skip_header_lines=header)
    return source_test_utils.read_from_source(src)


@pytest.mark.parametrize("header", [0, 1])
def test_line_chunks_match_read_from_text_under_any_split(tmp_path, header):
    from apache_beam.io import source_test_utils

    rng = random.Random(header)
    parts = []
    for i in range(400):
        parts.append(b"row %d " % i + b"x" * rng.randrange(0, 40))
        parts.append(rng.choice([b"\n", b"\r\n", b"\n", b"\n\n"]))
    data = b"".join(parts) + b"last line without newline\r"
    path = str(tmp_path / "lines.txt")
    with open(path, "wb") as fh:
        fh.write(data)
    expected = _text_lines(path, header)
    assert len(expected) > 400
    for chunk_bytes in (1, 7, 64, 1 << 20):
        source = fileio._LineChunkSource(path, header, chunk_bytes)
        for bundle_size in (len(data), 500, 97):
            got = []
            for bundle in source.split(desired_bundle_size=bundle_size):
                for _, chunk in source_test_utils.read_from_source(bundle.source, bundle.start_position,
                                                                   bundle.stop_position):
                    assert chunk.endswith(b"\n") or chunk.endswith(b"\r")  # whole lines only
                    got.extend(fileio.chunk_lines(chunk))
            assert got == expected, (chunk_bytes, bundle_size)
    # Dynamic splitting: primary + residual read every line exactly once.
    source = fileio._LineChunkSource(path, header, 64)
    single = source.split(desired_bundle_size=len(data))
    (bundle,) = list(single)
    for fraction in (0.1, 0.33, 0.5, 0.9):
        tracker = bundle.source.get_range_tracker(bundle.start_position, bundle.stop_position)
        reader = iter(bundle.source.read(tracker))
        first = [next(reader)]
        split = tracker.try_split(int(bundle.stop_position * fraction))
        primary = first + list(reader)
        residual = []
        if split:
            residual = source_test_utils.read_from_source(bundle.source, split[0], bundle.stop_position)
        lines = [ln for _, chunk in primary + residual for ln in fileio.chunk_lines(chunk)]
        assert lines == expected, fraction


def test_line_chunks_of_a_gzip_file(tmp_path):
    import gzip

    from apache_beam.io import source_test_utils

    lines = [b"h1,h2"] + [b"%d,%d" % (i, i * i) for i in range(3000)]
    path = str(tmp_path / "rows.csv.gz")
    with gzip.open(path, "wb") as fh:
        fh.write(b"\r\n".join(lines) + b"\r\n")
    source = fileio._LineChunkSource(path, 1, 1000)
    got = [ln for bundle in source.split(desired_bundle_size=100)
           for _, chunk in source_test_utils.read_from_source(bundle.source, bundle.start_position, bundle.stop_position)
           for ln in fileio.chunk_lines(chunk)]
    assert got == lines[1:]


def _quoted(rng: random.Random, fields: list[str]) -> list[str]:
    """RFC 4180 quoting of some fields (a quote inside is doubled), with delimiters put inside the
    quotes of the string columns, and a few quoting errors."""
    out = []
    for j, field in enumerate(fields):
        r = rng.random()
        if j in (6, 7) and r < 0.3:  # tags, cat: a delimiter or a quote inside a quoted field
            field = field + rng.choice([",", ", a", '"', 'say ""'])
        if r < 0.5:
            field = '"' + field.replace('"', '""') + '"'
        out.append(field)
    r = rng.random()
    j = rng.randrange(len(out))
    if r < 0.04:
        out[j] = '"' + out[j]  # a quote left open
    elif r < 0.08:
        out[j] = '"' + out[j].strip('"') + '"x'  # text after the closing quote
    elif r < 0.12:
        out[j] = out[j].strip('"') + 'in"side'  # a quote inside an unquoted field: a plain character
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_quoted_csv_fast_path_equals_parse_raw_row(seed):
    """RFC 4180 records (quoted fields holding delimiters and doubled quotes, quoting errors) give the
    same rows and dead letters on the column path as row by row; known answers on a hand-made record."""
    spec = FeatureSpec.from_dict(RICH_SPEC)
    assert spec.raw_format.quote == '"' and not spec.raw_format.multiline

    def good(rng):
        return _quoted(rng, _good_row(rng))

    lines = _lines(random.Random(seed), 1500, len(spec.raw_format.columns), good)
    assert sum(b'"' in ln for ln in lines) > 1000
    ref_good, ref_dead, ref_rows = _reference(spec, lines, RICH_VOCABS)
    got_good, got_dead, _, _ = _batched(spec, lines, RICH_VOCABS)
    assert got_good == ref_good and got_dead == ref_dead
    reasons = collections.Counter(r for _, r, _ in ref_dead)
    assert reasons["bad_quoting"] > 20 and sum(ref_good.values()) > 500, reasons
    # Records that a split at every delimiter would cut wrongly (a quoted delimiter) were read.
    ncols = len(spec.raw_format.columns)
    kept = [ln for ln in lines if b"\xff" not in ln and ln.decode().count(",") != ncols - 1
            and _parses(spec, ln.decode())]
    assert len(kept) > 50
    # Good quoted records stay on the column path: none reaches the per-row parser.
    parser = BatchParser(spec, RICH_VOCABS)
    parser._parse_slow = lambda *a: pytest.fail("a good quoted record took the per-row path")
    good_quoted = [ln for ln in kept if b"in\"side" not in ln][:50]
    assert parser.parse_lines(good_quoted).n == len(good_quoted) > 20
    fields = spec.split_line('1,3,2,"1.5",,"4 5","x,yy ""q""",a,"DEADbeef",0.5,1,"a Bb"')
    assert fields == ["1", "3", "2", "1.5", "", "4 5", 'x,yy "q"', "a", "DEADbeef", "0.5", "1", "a Bb"]
    row = spec.parse_raw_row(fields, RICH_VOCABS)
    assert row["tags"] == [hash_token('x,yy') % 7, hash_token('"q"') % 7] and row["hist"] == [4, 5] and row["sq"] == [0, 2]
    with pytest.raises(RowError, match=r"CSV quoting: .*set format.multiline: true") as err:
        spec.split_line('1,"open field,2')
    assert err.value.reason == "bad_quoting"
    assert spec.split_line('1,ab"c,2') == ["1", 'ab"c', "2"]  # a quote inside an unquoted field
    unquoted = FeatureSpec.from_dict({**RICH_SPEC, "format": {**RICH_SPEC["format"], "quote": None}})
    assert unquoted.split_line('1,"a,b"') == ["1", '"a', 'b"']  # quote: null splits at every delimiter


def _multiline_records(rng: random.Random, n: int) -> list[list[str]]:
    rows = []
    for i in range(n):
        text = rng.choice(["plain", "two\nlines", "comma, and\nbreak", 'quote "" \n\n', "", "x" * rng.randrange(0, 50)])
        rows.append([str(i), text, rng.choice(["a", "b\nc", "d"])])
    return rows


def _csv_bytes(rows: list[list[str]], quote_all: bool) -> bytes:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL).writerows(rows)
    return buf.getvalue().encode("utf-8")


@pytest.mark.parametrize("header", [0, 1])
def test_multiline_records_are_read_whole_at_any_chunk_size(tmp_path, header):
    """``format.multiline``: quoted fields holding line breaks; every record comes back whole (as the
    standard csv module reads the file), however small the chunks, and the source is not split."""
    import csv
    import io

    from apache_beam.io import source_test_utils

    rng = random.Random(7)
    rows = _multiline_records(rng, 300)
    data = (b"h1,h2,h3\n" if header else b"") + _csv_bytes(rows, quote_all=False)
    path = str(tmp_path / "multi.csv")
    with open(path, "wb") as fh:
        fh.write(data)
    assert data.count(b"\n") > len(rows) + 100  # many records span lines
    fmt = FeatureSpec.from_dict({
        "name": "m", "label": "y", "split_by": "line",
        "format": {"columns": ["y", "t", "c"], "multiline": True, "header": bool(header)},
        "defaults": {"embedding_dim": 2},
        "features": [{"name": "t", "kind": "categorical", "raw_type": "string", "hash_buckets": 5},
                     {"name": "c", "kind": "categorical", "raw_type": "string", "hash_buckets": 5}],
    }).raw_format
    for chunk_bytes in (1, 7, 64, 1 << 20):
        source = fileio._LineChunkSource(path, header, chunk_bytes, b'"')
        bundles = list(source.split(desired_bundle_size=97))
        assert len(bundles) == 1  # read whole: a reader starting mid-file cannot tell a quoted line break
        got = [_fields(record, fmt)
               for _, chunk in source_test_utils.read_from_source(bundles[0].source, bundles[0].start_position,
                                                                  bundles[0].stop_position)
               for record in fileio.chunk_records(chunk, b'"')]
        assert got == rows, chunk_bytes
    assert list(csv.reader(io.StringIO(data.decode(), newline=""))) [header:] == rows
    # Without multiline the lines are records: a quoted line break leaves a quote open (bad_quoting).
    assert fileio.chunk_records(b'1,"a\nb",c\n') == [b'1,"a', b'b",c']
    assert fileio.chunk_records(b'1,"a\r\nb",c\r\n2,x,y', b'"') == [b'1,"a\nb",c', b"2,x,y"]
    assert fileio.chunk_records(b'1,"never closed\n2,x,y\n', b'"') == [b'1,"never closed\n2,x,y']


def _parses(spec: FeatureSpec, text: str) -> bool:
    try:
        spec.parse_raw_row(spec.split_line(text), RICH_VOCABS)
    except RowError:
        return False
    return True


def _fields(record: bytes, fmt) -> list[str]:
    from zoo.spec.rows import split_quoted

    text = record.decode("utf-8")
    return split_quoted(text, fmt) if '"' in text else text.split(",")

"""The bad-input suite: every entry point against every class of bad input, and its exact outcome.

Each case of :data:`CASES` is one row of the README's "Bad input" table (a test renders the table
from the cases and checks that the README holds it): a raw row the Beam job cannot use is a dead
letter counted by reason in ``stats.json`` (and every other row is written: rows + dead letters ==
lines), an unusable file or spec is one line on stderr with exit status 1, and a served request is
either refused with an error naming the feature or mapped as documented (an out-of-range id to the
feature's OOV row). No case may end in a traceback or drop a row without a count.

Inputs: 300 synthetic rows (``zoo.datasets.write_raw``) built once into a data directory by
``beam_jobs.build_tfrecords`` (in-memory runner), and corrupt copies of both; the served signatures
and the ``zoo.cohorts`` / ``zoo.export`` models come from the session's ``exported`` fixture
(tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import re
import shutil
from typing import Any, Callable

import numpy as np
import pytest
import tensorflow as tf
from helpers import ROOT, SYNTHETIC_SPEC_PATH

from beam_jobs import add_aux_labels, build_tfrecords, cohort_stats
from beam_jobs.manifest import IntegrityError
from beam_jobs.options import job_main
from zoo import cli, data, datasets, export, train
from zoo.cohorts import cli as cohorts_cli
from zoo.spec import SpecError, load_spec
from zoo.spec.validation import _TOP_LEVEL_KEYS

pytestmark = pytest.mark.tf_only

ROWS = 300
SHARD = "train/part-00000-of-00004.tfrecord.gz"  # the shard every data-directory case breaks
TRAIN_ARGS = ["--model", "configs/models/dcnv2_test.yaml", "--variants", "baseline", "--max-epochs", "1"]
TAIL = " (--debug for the traceback)"
ITEM_VOCAB = 2000  # item_id's vocab_size in configs/datasets/synthetic.yaml: the OOV id


# ---------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """The synthetic raw CSV: ``{"header", "lines", "columns"}`` (lines as bytes, no terminator)."""
    out = tmp_path_factory.mktemp("bad_input_raw")
    (path,) = datasets.write_raw(load_spec(SYNTHETIC_SPEC_PATH), None, str(out), rows=ROWS, seed=1)
    header, *lines = open(path, "rb").read().rstrip(b"\n").split(b"\n")
    return {"header": header, "lines": lines, "columns": header.decode().split(",")}


@pytest.fixture(scope="module")
def good_data(raw, tmp_path_factory):
    """The 300 rows as a data directory (4 shards per split) and its stats.json."""
    work = tmp_path_factory.mktemp("bad_input_data")
    (work / "raw").mkdir()
    (work / "raw" / "part.csv").write_bytes(b"\n".join([raw["header"], *raw["lines"]]) + b"\n")
    out = str(work / "data")
    result = build_tfrecords.run(["--spec", SYNTHETIC_SPEC_PATH, "--input", str(work / "raw" / "*.csv"),
                                  "--output", out, "--direct_running_mode=in_memory"])
    assert result["stats"]["rows"] == ROWS and result["stats"]["dead_letter"]["total"] == 0
    return out, result["stats"]


def with_field(raw, line: bytes, **fields: bytes) -> bytes:
    """``line`` with some columns replaced."""
    values = line.split(b",")
    for name, value in fields.items():
        values[raw["columns"].index(name)] = value
    return b",".join(values)


@dataclasses.dataclass
class Ctx:
    """What a case runs against: the raw rows, the good data directory, the exported model, a work dir."""

    raw: dict
    data: str
    stats: dict
    exported: dict | None
    tmp: Any

    def broken(self, how: Callable[[str], None]) -> str:
        """A copy of the good data directory, broken by ``how(copy)``."""
        copy = str(self.tmp / "data")
        shutil.copytree(self.data, copy)
        how(copy)
        return copy


# Ways to break a data directory (each names what a reader must report).
def truncate_shard(d: str) -> None:
    path = os.path.join(d, SHARD)
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) - 10)


def flip_shard_byte(d: str) -> None:
    path = os.path.join(d, SHARD)
    raw = bytearray(open(path, "rb").read())
    raw[len(raw) // 2] ^= 0x40  # same size: only reading finds it
    open(path, "wb").write(bytes(raw))


def intact(d: str) -> None:
    """Leaves the copy as it is (the case breaks something else)."""


def remove_spec(d: str) -> None:
    os.remove(os.path.join(d, "spec.json"))


def misspell_spec_key(d: str) -> None:
    path = os.path.join(d, "spec.json")
    spec = json.load(open(path))
    spec["featuers"] = spec.pop("features")
    json.dump(spec, open(path, "w"))


def misspell_spec_axis(d: str) -> None:
    path = os.path.join(d, "spec.json")
    spec = json.load(open(path))
    spec["c2al"]["axis"] = "user_valeu"
    json.dump(spec, open(path, "w"))


def unknown_key_line(path: str) -> str:
    return f"{path}: spec: unknown top-level key(s) ['featuers']; allowed: {sorted(_TOP_LEVEL_KEYS)}"


def truncated_line(d: str) -> str:
    path = os.path.join(d, SHARD)
    size = os.path.getsize(path)
    return (f"{path}: expected {size + 10} bytes (manifest.json), found {size}: the shard is truncated; re-copy "
            f"the directory or re-run the Beam job that wrote {d}, and check it with `python -m beam_jobs.verify {d}`")


def corrupt_shard_pattern(d: str) -> str:
    """The one line of a Beam job reading a shard whose gzip data is corrupt (zlib's words vary)."""
    return (re.escape(f"{os.path.join(d, SHARD)}: cannot read the file: it is corrupt (") + r"[^\n]+"
            + re.escape(f"); check the directory with `python -m beam_jobs.verify {d}`, then re-copy it or re-run "
                        "the Beam job that wrote it"))


def data_loss_pattern(d: str) -> str:
    """The one line of zoo.train / zoo.cohorts after tf.data failed on a corrupt shard."""
    return (re.escape(f"{d}: a shard could not be read (DataLossError: ") + r"[^\n]+"
            + re.escape(f"); run `python -m beam_jobs.verify {d}` to find it, then re-copy it or re-run the Beam job"))


# ---------------------------------------------------------------------------------------------------
# Outcomes
# ---------------------------------------------------------------------------------------------------
def run_rows(ctx: Ctx, extra: list[bytes]) -> dict:
    """build_tfrecords on the good lines plus ``extra``; returns stats.json, after checking that every
    line is a written row or a dead letter and that the dead-letter file holds each one."""
    (ctx.tmp / "raw").mkdir()
    path = ctx.tmp / "raw" / "part.csv"
    path.write_bytes(b"\n".join([ctx.raw["header"], *ctx.raw["lines"], *extra]) + b"\n")
    out = str(ctx.tmp / "out")
    stats = build_tfrecords.run(["--spec", SYNTHETIC_SPEC_PATH, "--input", str(path), "--output", out,
                                 "--direct_running_mode=in_memory"])["stats"]
    dead = [json.loads(ln) for ln in open(os.path.join(out, "dead_letter", "part-00000-of-00001.jsonl"))]
    assert stats["rows"] + stats["dead_letter"]["total"] == ROWS + len(extra)  # nothing dropped uncounted
    assert len(dead) == stats["dead_letter"]["total"] and {d["file"] for d in dead} <= {str(path)}
    assert sum(json.load(open(os.path.join(out, "manifest.json")))["splits"][s]["records"]
               for s in ("train", "valid", "test")) == stats["rows"]  # every good row is in a shard
    return stats


def dead_letters(reasons: dict[str, int], rows: int = ROWS, **features: dict[str, int]):
    """Outcome: ``stats.json`` counts these dead letters by reason, ``rows`` rows, and these feature counts
    (``out_of_vocab`` / ``truncated``) above the good data's."""
    def check(ctx: Ctx, extra, _capsys):
        stats = run_rows(ctx, extra(ctx.raw))
        assert stats["dead_letter"]["by_reason"] == reasons
        assert stats["rows"] == rows
        for name, counts in features.items():
            for key, added in counts.items():
                assert stats["features"][name][key] == ctx.stats["features"][name][key] + added, (name, key)
    return check


def one_line(prog: str, main: Callable[[list[str]], int], pattern: Callable[[Ctx, Any], str], exact: bool = True):
    """Outcome: ``main(argv)`` returns 1 and stderr is exactly ``<prog>: error: <line> (--debug ...)``, where
    ``pattern(ctx, argv)`` gives the line (``exact``) or a regular expression for it (parts that vary, e.g.
    zlib's words on a shard whose bytes depend on the shard rotation)."""
    def check(ctx: Ctx, argv, capsys):
        args = argv(ctx)
        code = main(args)
        err = capsys.readouterr().err
        line = pattern(ctx, args)
        assert code == 1, err
        body = re.escape(line) if exact else line
        want = re.escape(f"{prog}: error: ") + body + re.escape(f"{TAIL}\n")
        assert re.fullmatch(want, err), err
    return check


def job(module) -> Callable[[list[str]], int]:
    return lambda argv: job_main(f"python -m beam_jobs.{module.__name__.rsplit('.', 1)[1]}", module.run, argv)


BUILD = "python -m beam_jobs.build_tfrecords"
IN_MEMORY = ["--direct_running_mode=in_memory"]


def build_argv(write: Callable[[Ctx], str], spec: Callable[[Ctx], str] = lambda ctx: SYNTHETIC_SPEC_PATH):
    """argv of build_tfrecords on the input ``write(ctx)`` returns (a pattern) with the spec ``spec(ctx)``."""
    return lambda ctx: ["--spec", spec(ctx), "--input", write(ctx), "--output", str(ctx.tmp / "out"), *IN_MEMORY]


def raw_file(name: str, content: Callable[[Ctx], bytes | None]) -> Callable[[Ctx], str]:
    def write(ctx: Ctx) -> str:
        (ctx.tmp / "raw").mkdir(exist_ok=True)
        body = content(ctx)
        if body is not None:
            (ctx.tmp / "raw" / name).write_bytes(body)
        return str(ctx.tmp / "raw" / name)
    return write


def csv_bytes(ctx: Ctx) -> bytes:
    return b"\n".join([ctx.raw["header"], *ctx.raw["lines"]]) + b"\n"


def corrupt_gzip(ctx: Ctx) -> bytes:
    blob = bytearray(gzip.compress(csv_bytes(ctx)))
    blob[len(blob) // 2] ^= 0xFF
    return bytes(blob)


def spec_file(edit: Callable[[str], str] | None = None, binary: bool = False) -> Callable[[Ctx], str]:
    """A dataset YAML in the work dir: the synthetic one edited, or binary bytes."""
    def write(ctx: Ctx) -> str:
        path = ctx.tmp / "spec.yaml"
        path.write_bytes(bytes(range(256)) if binary else edit(open(SYNTHETIC_SPEC_PATH).read()).encode())
        return str(path)
    return write


def misspell_yaml_key(text: str) -> str:
    return text.replace("\nfeatures:\n", "\nfeatuers:\n")


def misspell_yaml_feature(text: str) -> str:
    return text.replace("share_embedding: item_category}", "share_embedding: item_categroy}")


def data_job(module, how: Callable[[str], None] | None, output: str = "out") -> Callable[[Ctx], list[str]]:
    """argv of cohort_stats / add_aux_labels on a broken copy (``how``) or a missing directory (None)."""
    def argv(ctx: Ctx) -> list[str]:
        d = ctx.broken(how) if how else str(ctx.tmp / "nowhere")
        out = str(ctx.tmp / (output + (".json" if module is cohort_stats else "")))
        return ["--data", d, "--output", out, *IN_MEMORY]
    return argv


def data_dir_of(argv: list[str]) -> str:
    return argv[argv.index("--data") + 1]


def train_argv(how: Callable[[str], None] | None, *extra: str, model: str | None = None):
    def argv(ctx: Ctx) -> list[str]:
        d = ctx.broken(how) if how else str(ctx.tmp / "nowhere")
        args = ["--data", d, "--output", str(ctx.tmp / "run"), *TRAIN_ARGS, *extra]
        if model is not None:
            (ctx.tmp / "model.yaml").write_text(model)
            args[args.index("--model") + 1] = str(ctx.tmp / "model.yaml")
        return args
    return argv


def cohorts_argv(how: Callable[[str], None] | None):
    def argv(ctx: Ctx) -> list[str]:
        d = ctx.broken(how) if how else str(ctx.tmp / "nowhere")
        return ["--data", d, "--model", ctx.exported["keras_path"], "--axis", "user_value",
                "--output", str(ctx.tmp / "discovery"), "--split", "train"]
    return argv


def export_argv(*, spec: Callable[[Ctx], str] | None = None, eval_data: Callable[[str], None] | None | str = "good",
                model: str | None = None):
    def argv(ctx: Ctx) -> list[str]:
        args = ["--model", model or ctx.exported["keras_path"], "--export-root", str(ctx.tmp / "sm"),
                "--model-name", "m", "--spec", spec(ctx) if spec else SYNTHETIC_SPEC_PATH]
        if eval_data is None:
            args += ["--eval-data", str(ctx.tmp / "nowhere")]
        elif eval_data != "good":
            args += ["--eval-data", ctx.broken(eval_data), "--warmup-split", "train"]
        return args
    return argv


def reader_error(how: Callable[[str], None] | None, error: type, message: Callable[[str], str]):
    """Outcome: ``zoo.data.read_split`` raises ``error`` with exactly ``message(data_dir)``."""
    def check(ctx: Ctx, *_):
        d = ctx.broken(how) if how else str(ctx.tmp / "nowhere")
        with pytest.raises(error) as raised:
            data.read_split(d, "train", 64)
        assert str(raised.value) == message(d)
    return check


def reader_data_loss(ctx: Ctx, *_):
    """Outcome: the corrupt shard fails mid-read with DataLossError; the CLIs' hint makes it one line."""
    d = ctx.broken(flip_shard_byte)
    ds = data.read_split(d, "train", 64)  # the cheap check passes: the size is right
    with pytest.raises(tf.errors.DataLossError) as raised:
        for _ in ds:
            pass
    assert re.fullmatch(data_loss_pattern(d), cli.data_loss_hint(d)(raised.value))


# Served signatures: the exported C2AL model, called in Python as TF Serving calls it.
_LOADED: dict[str, Any] = {}


def served(ctx: Ctx):
    """The loaded SavedModel (once per module) and 4 evaluation rows of its inputs."""
    path = ctx.exported["path"]
    loaded = _LOADED.get(path) or _LOADED.setdefault(path, tf.saved_model.load(path))
    features = {k: v[:4] for k, v in ctx.exported["features"].items()}
    return loaded, features


def default_call(loaded, features, **tensors):
    fn = loaded.signatures[export.SIGNATURE]
    return fn(**{**{k: tf.constant(v) for k, v in features.items()}, **tensors})["probability"].numpy().ravel()


def examples_call(loaded, features, edit=None, records=None):
    from tensorflow.core.example import example_pb2

    if records is None:
        records = []
        for raw in export.serialize_examples(load_spec(SYNTHETIC_SPEC_PATH), features):
            example = example_pb2.Example.FromString(raw)
            if edit:
                edit(example.features.feature)
            records.append(example.SerializeToString())
    fn = loaded.signatures[export.EXAMPLES_SIGNATURE]
    return fn(examples=tf.constant(records))["probability"].numpy().ravel()


def served_error(error: type, pattern: str, call: Callable):
    """Outcome: the signature call raises ``error`` whose message matches ``pattern`` (naming the feature)."""
    def check(ctx: Ctx, *_):
        loaded, features = served(ctx)
        with pytest.raises(error, match=pattern):
            call(loaded, features)
    return check


def served_as_oov(call: Callable):
    """Outcome: the request's predictions equal those of the same rows with item_id = the OOV id."""
    def check(ctx: Ctx, *_):
        loaded, features = served(ctx)
        oov = {**features, "item_id": np.full_like(features["item_id"], ITEM_VOCAB)}
        expected = default_call(loaded, oov)
        assert not np.allclose(expected, default_call(loaded, features))  # the OOV row is another row
        np.testing.assert_allclose(call(loaded, features), expected, rtol=0, atol=1e-6)
    return check


def with_item(value):
    return lambda loaded, features: default_call(loaded, features, item_id=tf.constant(
        np.full_like(features["item_id"], value)))


def with_price(value):
    def call(loaded, features):
        price = features["price"].copy()
        price[1, 0] = value
        return default_call(loaded, features, price=tf.constant(price))
    return call


def example_item(value):
    def edit(feature):
        feature["item_id"].int64_list.value[0] = value
    return lambda loaded, features: examples_call(loaded, features, edit)


def example_price(value):
    def edit(feature):
        feature["price"].float_list.value[0] = value
    return lambda loaded, features: examples_call(loaded, features, edit)


def example_float_item(feature):
    feature["item_id"].Clear()
    feature["item_id"].float_list.value.append(3.0)


def example_no_price(feature):
    del feature["price"]


def check_features_error(edit: Callable[[dict], dict], message: str):
    """Outcome: ``zoo.export.check_features`` (requests and warm-up records) raises FeatureError ``message``."""
    def check(ctx: Ctx, *_):
        _, features = served(ctx)
        with pytest.raises(export.FeatureError) as raised:
            export.check_features(ctx.exported["spec"], edit(features))
        assert str(raised.value) == message
    return check


# ---------------------------------------------------------------------------------------------------
# The table: (entry point, bad-input class, README outcome, argv or extra lines, check)
# ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Case:
    entry: str
    klass: str
    outcome: str  # the README cell
    check: Callable
    arg: Any = None
    needs_model: bool = False

    @property
    def id(self) -> str:
        return f"{self.entry}-{self.klass}".replace(" ", "_")


def rows(*lines: Callable[[dict], bytes]) -> Callable[[dict], list[bytes]]:
    return lambda raw: [line(raw) for line in lines]


def first(**fields: bytes) -> Callable[[dict], bytes]:
    return lambda raw: with_field(raw, raw["lines"][0], **fields)


BT = "beam_jobs.build_tfrecords"
CS, AA = "beam_jobs.cohort_stats", "beam_jobs.add_aux_labels"
CASES = [
    # --- raw rows: dead letters by reason, every other row written -----------------------------------
    Case(BT, "binary bytes", "dead letter `bad_encoding`",
         dead_letters({"bad_encoding": 1}), rows(lambda raw: bytes(range(256)).replace(b"\n", b""))),
    Case(BT, "control characters (valid UTF-8)", "dead letter `bad_number`",
         dead_letters({"bad_number": 1}), rows(first(item_id=b"\x00\x01\x02"))),
    Case(BT, "invalid UTF-8", "dead letter `bad_encoding`",
         dead_letters({"bad_encoding": 1}), rows(lambda raw: raw["lines"][1][:5] + b"\xc3\x28" + raw["lines"][1][5:])),
    Case(BT, "1 MB line (one 1 MB number)", "dead letter `bad_number`",
         dead_letters({"bad_number": 1}), rows(first(item_id=b"1" * (1 << 20)))),
    Case(BT, "1 MB line (a 1 MB sequence)", "a good row, cut to `max_length` (`truncated` +1)",
         dead_letters({}, ROWS + 1, recent_categories={"truncated": 1}),
         rows(first(recent_categories=b" ".join([b"3"] * (1 << 19))))),
    Case(BT, "wrong types", "dead letters `bad_number` (text or float in a number/id), `bad_label`",
         dead_letters({"bad_number": 2, "bad_label": 1}),
         rows(first(price=b"abc"), first(item_id=b"3.5"), first(click=b"yes"))),
    Case(BT, "wrong column count", "dead letter `wrong_column_count`",
         dead_letters({"wrong_column_count": 1}), rows(lambda raw: raw["lines"][0] + b",extra")),
    Case(BT, "NaN/inf dense values", "dead letter `bad_number` (`nan`, `inf`, `-inf`, `NaN`)",
         dead_letters({"bad_number": 4}),
         rows(first(price=b"nan"), first(price=b"inf"), first(discount=b"-inf"), first(user_value=b"NaN"))),
    Case(BT, "negative ids", "a good row, stored as given (`out_of_vocab` +1; the model's OOV row)",
         dead_letters({}, ROWS + 1, item_id={"out_of_vocab": 1}), rows(first(item_id=b"-5"))),
    Case(BT, "huge ids (within int64)", "a good row, stored as given (`out_of_vocab` +1; the model's OOV row)",
         dead_letters({}, ROWS + 1, item_id={"out_of_vocab": 1}), rows(first(item_id=str(2**62).encode()))),
    Case(BT, "huge ids (beyond int64), -1 in a sequence", "dead letter `bad_number`",
         dead_letters({"bad_number": 3}),
         rows(first(item_id=b"99999999999999999999999"), first(recent_categories=b"1 99999999999999999999999"),
              first(recent_categories=b"1 -1 2"))),
    # --- raw files and specs: one line --------------------------------------------------------------
    Case(BT, "missing file", "one line: `--input PATTERN: no file matches`",
         one_line(BUILD, job(build_tfrecords), lambda ctx, a: f"--input {a[3]}: no file matches"),
         build_argv(raw_file("part.csv", lambda ctx: None))),
    Case(BT, "empty file", "one line: `--input PATTERN: the 1 matching file(s) are empty`",
         one_line(BUILD, job(build_tfrecords), lambda ctx, a: f"--input {a[3]}: the 1 matching file(s) are empty"),
         build_argv(raw_file("part.csv", lambda ctx: b""))),
    Case(BT, "binary file", "dead letter `bad_encoding` per line (no row written: `rows` 0)",
         lambda ctx, *_: _binary_file(ctx)),
    Case(BT, "corrupt gzip", "one line: `FILE: cannot read the file: it is corrupt (zlib.error: ...)`",
         one_line(BUILD, job(build_tfrecords), lambda ctx, a: re.escape(
             f"{a[3]}: cannot read the file: it is corrupt (zlib.error: Error -3 while decompressing data: ")
             + r"[^)]+" + re.escape("); re-copy it or leave it out of --input"), exact=False),
         build_argv(raw_file("part.csv.gz", corrupt_gzip))),
    Case(BT, "truncated gzip", "one line: `FILE: cannot read the file: it is truncated ...`",
         one_line(BUILD, job(build_tfrecords), lambda ctx, a: f"{a[3]}: cannot read the file: it is truncated (it "
                  "ends inside a compressed stream); re-copy it or leave it out of --input"),
         build_argv(raw_file("part.csv.gz", lambda ctx: gzip.compress(csv_bytes(ctx))[:-100]))),
    Case(BT, "missing spec", "one line: `SPEC: no such spec file or data directory`",
         one_line(BUILD, job(build_tfrecords), lambda ctx, a: f"{a[1]}: no such spec file or data directory"),
         build_argv(raw_file("part.csv", csv_bytes), lambda ctx: str(ctx.tmp / "nospec.yaml"))),
    Case(BT, "binary spec", "one line: `SPEC: not a text file (... not UTF-8)`",
         one_line(BUILD, job(build_tfrecords),
                  lambda ctx, a: f"{a[1]}: not a text file (invalid start byte at byte 128: not UTF-8)"),
         build_argv(raw_file("part.csv", csv_bytes), spec_file(binary=True))),
    Case(BT, "spec typo (unknown key)", "one line: `SPEC: spec: unknown top-level key(s) ['featuers']; ...`",
         one_line(BUILD, job(build_tfrecords), lambda ctx, a: unknown_key_line(a[1])),
         build_argv(raw_file("part.csv", csv_bytes), spec_file(misspell_yaml_key))),
    Case(BT, "spec typo (misspelled feature)", "one line: `SPEC: feature 'recent_categories': share_embedding "
         "'item_categroy' is not a declared ...`",
         one_line(BUILD, job(build_tfrecords), lambda ctx, a: f"{a[1]}: feature 'recent_categories': share_embedding "
                  "'item_categroy' is not a declared categorical or sequence feature"),
         build_argv(raw_file("part.csv", csv_bytes), spec_file(misspell_yaml_feature))),
    # --- data directories: the two Beam jobs that read them -----------------------------------------
    *[c for module, name in ((cohort_stats, CS), (add_aux_labels, AA)) for c in (
        Case(name, "missing dir", "one line: `DIR: no such data directory`",
             one_line(f"python -m {name}", job(module), lambda ctx, a: f"{data_dir_of(a)}: no such data directory"),
             data_job(module, None)),
        Case(name, "no spec.json", "one line: `DIR: data directory has no spec.json ...`",
             one_line(f"python -m {name}", job(module), lambda ctx, a: f"{data_dir_of(a)}: data directory has no "
                      "spec.json (write one with beam_jobs.build_tfrecords)"),
             data_job(module, remove_spec)),
        Case(name, "truncated shard", "one line: `SHARD: expected N bytes (manifest.json), found M ...`",
             one_line(f"python -m {name}", job(module), lambda ctx, a: truncated_line(data_dir_of(a))),
             data_job(module, truncate_shard)),
        Case(name, "corrupt shard (same size)", "one line: `SHARD: cannot read the file: it is corrupt (...)`",
             one_line(f"python -m {name}", job(module), lambda ctx, a: corrupt_shard_pattern(data_dir_of(a)),
                      exact=False),
             data_job(module, flip_shard_byte)),
        Case(name, "spec typo (unknown key)", "one line: `DIR/spec.json: spec: unknown top-level key(s) ...`",
             one_line(f"python -m {name}", job(module),
                      lambda ctx, a: unknown_key_line(os.path.join(data_dir_of(a), "spec.json"))),
             data_job(module, misspell_spec_key)),
    )],
    # --- the reader (a library: exceptions naming the file; the CLIs print them as one line) -----------
    Case("zoo.data.read_split", "missing dir", "FileNotFoundError `DIR: no such spec file or data directory`",
         reader_error(None, FileNotFoundError, lambda d: f"{d}: no such spec file or data directory")),
    Case("zoo.data.read_split", "no spec.json", "FileNotFoundError `DIR: data directory has no spec.json ...`",
         reader_error(remove_spec, FileNotFoundError,
                      lambda d: f"{d}: data directory has no spec.json (write one with beam_jobs.build_tfrecords)")),
    Case("zoo.data.read_split", "truncated shard", "IntegrityError `SHARD: expected N bytes (manifest.json) ...`",
         reader_error(truncate_shard, IntegrityError, truncated_line)),
    Case("zoo.data.read_split", "corrupt shard (same size)", "DataLossError mid-read (the CLIs: one line naming "
         "the directory and `verify`)", reader_data_loss),
    Case("zoo.data.read_split", "spec typo (misspelled axis)", "SpecError `DIR/spec.json: cohort axis "
         "'user_valeu': not declared ...`",
         reader_error(misspell_spec_axis, SpecError, lambda d: f"{d}/spec.json: cohort axis 'user_valeu': not "
                      "declared in spec 'synthetic' (axes: ['user_value', 'device'])")),
    # --- zoo.train -------------------------------------------------------------------------------------
    Case("zoo.train", "missing dir", "one line: `DIR: no such spec file or data directory`",
         one_line("python -m zoo.train", train.main,
                  lambda ctx, a: f"{data_dir_of(a)}: no such spec file or data directory"), train_argv(None)),
    Case("zoo.train", "no spec.json", "one line: `DIR: data directory has no spec.json ...`",
         one_line("python -m zoo.train", train.main, lambda ctx, a: f"{data_dir_of(a)}: data directory has no "
                  "spec.json (write one with beam_jobs.build_tfrecords)"), train_argv(remove_spec)),
    Case("zoo.train", "truncated shard", "one line: `SHARD: expected N bytes (manifest.json), found M ...`",
         one_line("python -m zoo.train", train.main, lambda ctx, a: truncated_line(data_dir_of(a))),
         train_argv(truncate_shard)),
    Case("zoo.train", "corrupt shard (same size)", "one line: `DIR: a shard could not be read (DataLossError: "
         "...); run ... verify`",
         one_line("python -m zoo.train", train.main, lambda ctx, a: data_loss_pattern(data_dir_of(a)), exact=False),
         train_argv(flip_shard_byte)),
    Case("zoo.train", "spec typo (misspelled axis)", "one line: `DIR/spec.json: cohort axis 'user_valeu': not "
         "declared ...`",
         one_line("python -m zoo.train", train.main, lambda ctx, a: f"{data_dir_of(a)}/spec.json: cohort axis "
                  "'user_valeu': not declared in spec 'synthetic' (axes: ['user_value', 'device'])"),
         train_argv(misspell_spec_axis)),
    Case("zoo.train", "model YAML typo", "one line: `MODEL: training: unknown key 'epochs'; keys are ...`",
         one_line("python -m zoo.train", train.main, lambda ctx, a: (
             f"{a[a.index('--model') + 1]}: training: unknown key 'epochs'; keys are ['batch_size', 'learning_rate', "
             "'reader', 'loss', 'dtype_policy', 'checkpoint_every_steps', 'max_epochs', 'early_stopping_patience', 'reduce_lr_factor', "
             "'reduce_lr_patience', 'min_learning_rate', 'min_delta', 'monitor', 'task_weights']")),
         train_argv(intact, model=f"base: {ROOT}/configs/models/_test_base.yaml\nbackbone: dcnv2\n"
                    "training: {epochs: 1}\n")),
    # --- zoo.cohorts (the exported test model) -----------------------------------------------------------
    Case("zoo.cohorts", "missing dir", "one line: `DIR: no such spec file or data directory`",
         one_line("python -m zoo.cohorts", cohorts_cli.main,
                  lambda ctx, a: f"{data_dir_of(a)}: no such spec file or data directory"),
         cohorts_argv(None), needs_model=True),
    Case("zoo.cohorts", "no spec.json", "one line: `DIR: data directory has no spec.json ...`",
         one_line("python -m zoo.cohorts", cohorts_cli.main, lambda ctx, a: f"{data_dir_of(a)}: data directory has "
                  "no spec.json (write one with beam_jobs.build_tfrecords)"),
         cohorts_argv(remove_spec), needs_model=True),
    Case("zoo.cohorts", "truncated shard", "one line: `SHARD: expected N bytes (manifest.json), found M ...`",
         one_line("python -m zoo.cohorts", cohorts_cli.main, lambda ctx, a: truncated_line(data_dir_of(a))),
         cohorts_argv(truncate_shard), needs_model=True),
    Case("zoo.cohorts", "corrupt shard (same size)", "one line: `DIR: a shard could not be read (DataLossError: "
         "...); run ... verify`",
         one_line("python -m zoo.cohorts", cohorts_cli.main, lambda ctx, a: data_loss_pattern(data_dir_of(a)),
                  exact=False), cohorts_argv(flip_shard_byte), needs_model=True),
    # --- zoo.export ------------------------------------------------------------------------------------
    Case("zoo.export", "missing model", "one line: `File not found: filepath=MODEL. ...` (Keras's message)",
         one_line("python -m zoo.export", export.main, lambda ctx, a: f"File not found: filepath={a[1]}. Please "
                  "ensure the file is an accessible `.keras` zip file."),
         export_argv(model="/nonexistent/model.keras"), needs_model=True),
    Case("zoo.export", "spec typo (unknown key)", "one line: `SPEC: spec: unknown top-level key(s) ['featuers']; ...`",
         one_line("python -m zoo.export", export.main, lambda ctx, a: unknown_key_line(a[a.index("--spec") + 1])),
         export_argv(spec=spec_file(misspell_yaml_key)), needs_model=True),
    Case("zoo.export", "missing warm-up dir", "one line: `no shards match DIR/test/part-*.tfrecord.gz`",
         one_line("python -m zoo.export", export.main, lambda ctx, a: "no shards match "
                  f"{a[a.index('--eval-data') + 1]}/test/part-*.tfrecord.gz"),
         export_argv(eval_data=None), needs_model=True),
    Case("zoo.export", "truncated warm-up shard", "one line: `SHARD: expected N bytes (manifest.json), found M ...`",
         one_line("python -m zoo.export", export.main, lambda ctx, a: truncated_line(a[a.index("--eval-data") + 1])),
         export_argv(eval_data=truncate_shard), needs_model=True),
    # --- served signatures (the exported SavedModel) ------------------------------------------------
    Case("serving_default", "wrong dtype", "TypeError naming the input (`name='item_id'`)",
         served_error(TypeError, "name='item_id'", lambda loaded, f: loaded.signatures[export.SIGNATURE](
             **{**f, "item_id": tf.constant(f["item_id"], tf.float32)})), needs_model=True),
    Case("serving_default", "missing feature", "TypeError `missing a required argument: 'price'`",
         served_error(TypeError, "missing a required argument: 'price'", lambda loaded, f: loaded.signatures[
             export.SIGNATURE](**{k: tf.constant(v) for k, v in f.items() if k != "price"})), needs_model=True),
    Case("serving_default", "NaN dense value", "InvalidArgumentError `feature 'price': a NaN or infinite value ...`",
         served_error(tf.errors.InvalidArgumentError, r"feature 'price': a NaN or infinite value \(dense inputs must "
                      r"be finite\) : Tensor had NaN values", with_price(np.nan)), needs_model=True),
    Case("serving_default", "inf dense value", "InvalidArgumentError `feature 'price': a NaN or infinite value ...`",
         served_error(tf.errors.InvalidArgumentError, r"feature 'price': a NaN or infinite value \(dense inputs must "
                      r"be finite\) : Tensor had Inf values", with_price(-np.inf)), needs_model=True),
    Case("serving_default", "negative ids", "the feature's OOV row (as id `vocab_size`)",
         served_as_oov(with_item(-5)), needs_model=True),
    Case("serving_default", "huge ids", "the feature's OOV row (as id `vocab_size`)",
         served_as_oov(with_item(2**62)), needs_model=True),
    Case("predict_examples", "wrong dtype", "InvalidArgumentError `Key: item_id ... Data types don't match`",
         served_error(tf.errors.InvalidArgumentError, r"(?s)Key: item_id.*Data types don't match",
                      lambda loaded, f: examples_call(loaded, f, example_float_item)), needs_model=True),
    Case("predict_examples", "missing feature", "InvalidArgumentError `Feature: price (data type: float) is "
         "required but could not be found`",
         served_error(tf.errors.InvalidArgumentError, r"Feature: price \(data type: float\) is required but could "
                      "not be found", lambda loaded, f: examples_call(loaded, f, example_no_price)), needs_model=True),
    Case("predict_examples", "NaN/inf dense value", "InvalidArgumentError `feature 'price': a NaN or infinite "
         "value ...`",
         served_error(tf.errors.InvalidArgumentError, r"feature 'price': a NaN or infinite value",
                      example_price(float("inf"))), needs_model=True),
    Case("predict_examples", "negative ids", "the feature's OOV row (as id `vocab_size`)",
         served_as_oov(example_item(-5)), needs_model=True),
    Case("predict_examples", "huge ids", "the feature's OOV row (as id `vocab_size`)",
         served_as_oov(example_item(2**62)), needs_model=True),
    Case("predict_examples", "binary bytes (garbage Example)", "InvalidArgumentError `Could not parse example "
         "input`",
         served_error(tf.errors.InvalidArgumentError, "Could not parse example input",
                      lambda loaded, f: examples_call(loaded, f, records=[bytes(range(256))])), needs_model=True),
    Case("zoo.export.check_features", "NaN/inf dense value", "FeatureError `feature 'price': a NaN or infinite "
         "value ...`",
         check_features_error(lambda f: {**f, "price": np.where(f["price"] > 0, np.nan, f["price"])},
                              "feature 'price': a NaN or infinite value (dense inputs must be finite)"),
         needs_model=True),
    Case("zoo.export.check_features", "huge ids (beyond int64)", "FeatureError `feature 'item_id': id N is outside "
         "int64`",
         check_features_error(lambda f: {**f, "item_id": np.full(f["item_id"].shape, 2**63, np.uint64)},
                              f"feature 'item_id': id {2**63} is outside int64"), needs_model=True),
]


def _binary_file(ctx: Ctx) -> None:
    """A raw file of binary bytes: each of its lines is a ``bad_encoding`` dead letter, counted."""
    blob = bytes(range(256)) * 40  # one newline per 256 bytes
    (ctx.tmp / "raw").mkdir()
    (ctx.tmp / "raw" / "part.csv").write_bytes(blob)
    stats = build_tfrecords.run(["--spec", SYNTHETIC_SPEC_PATH, "--input", str(ctx.tmp / "raw" / "part.csv"),
                                 "--output", str(ctx.tmp / "out"), *IN_MEMORY])["stats"]
    assert stats["rows"] == 0
    lines = blob.count(b"\n") + 1 - 1  # an unterminated last line, less the first line (the header)
    assert stats["dead_letter"]["by_reason"] == {"bad_encoding": lines}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, raw, good_data, tmp_path, capsys, request):
    exported = request.getfixturevalue("exported") if case.needs_model else None
    ctx = Ctx(raw, good_data[0], good_data[1], exported, tmp_path)
    case.check(ctx, case.arg, capsys)


def readme_table() -> str:
    """The README's "Bad input" table, rendered from :data:`CASES`."""
    lines = ["| entry point | bad input | outcome |", "| --- | --- | --- |"]
    lines += [f"| `{c.entry}` | {c.klass} | {c.outcome} |" for c in CASES]
    return "\n".join(lines) + "\n"


def test_readme_table_is_the_case_table():
    with open(os.path.join(ROOT, "README.md")) as fh:
        assert readme_table() in fh.read()

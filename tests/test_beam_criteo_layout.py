"""A dataset in the common Criteo layout works from configs/datasets/criteo_layout.yaml alone:
label, 13 integer columns with blanks (and negatives), 26 hex columns with blanks, tab-separated, no
header -> two-pass ingest (hex vocabularies, log1p dense) -> zoo.data.read_split gives the values
computed here independently -> a DCNv2 backbone trains on it and exports."""

from __future__ import annotations

import collections
import math
import os
import random

import numpy as np
import pytest

from beam_jobs import build_tfrecords, fileio
from zoo.spec import SPLITS, load_spec

pytestmark = pytest.mark.tf_only

YAML = "configs/datasets/criteo_layout.yaml"
ROWS = 60


def _fixture_lines(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pools = [[f"{rng.getrandbits(32):08x}" for _ in range(3)] + [""] for _ in range(26)]
    lines = []
    for i in range(ROWS):
        label = str(int(rng.random() < 0.4))
        dense = ["" if rng.random() < 0.3 else str(rng.randrange(-3, 60)) for _ in range(13)]
        cats = []
        for k in range(26):
            token = rng.choice(pools[k])
            if rng.random() < 0.1:
                token = f"{rng.getrandbits(32):08X}"  # a rare token (upper case: normalized to lower)
            cats.append(token)
        lines.append("\t".join([label] + dense + cats))
    return lines


def _expected(spec, lines):
    """Split, vocabularies and stored values computed here from the raw text (not with the job's code)."""
    split_of = {line: spec.split_of_line(line.encode()) for line in lines}
    counts = [collections.Counter() for _ in range(26)]
    for line in lines:
        if split_of[line] == "train":
            for k, token in enumerate(line.split("\t")[14:]):
                counts[k][token.lower()] += 1
    vocabs = []
    for c in counts:
        kept = sorted((t for t, n in c.items() if n >= 2), key=lambda t: (-c[t], t))
        vocabs.append({t: i for i, t in enumerate(kept)})
    rows = {s: collections.Counter() for s in SPLITS}
    for line in lines:
        fields = line.split("\t")
        values = [("label", float(fields[0]))]
        for i, text in enumerate(fields[1:14], 1):
            x = float(text) if text else 0.0
            values.append((f"I{i}", float(np.float32(math.log1p(max(x, 0.0))))))
        for k, token in enumerate(fields[14:]):
            values.append((f"C{k + 1}", vocabs[k].get(token.lower(), len(vocabs[k]))))
        i1 = values[1][1]
        values.append(("cohort/I1_level", 0 if i1 < 0.5 else 1 if i1 < 2.3 else 2))
        rows[split_of[line]][tuple(sorted(values))] += 1
    return vocabs, rows


def test_criteo_layout_from_yaml_alone(tmp_path):
    from zoo import data

    spec = load_spec(YAML)
    assert spec.raw_format.delimiter == "\t" and not spec.raw_format.header and spec.split_by == "line"
    assert [f.name for f in spec.dense] == [f"I{i}" for i in range(1, 14)]
    assert [f.name for f in spec.categorical] == [f"C{i}" for i in range(1, 27)]
    lines = _fixture_lines()
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "day_0").write_text("\n".join(lines[:35]) + "\n")
    (tmp_path / "raw" / "day_1").write_text("\n".join(lines[35:]) + "\n")
    out = str(tmp_path / "data")
    info = build_tfrecords.run(["--spec", YAML, "--input", str(tmp_path / "raw" / "day_*"), "--output", out,
                                "--num_shards", "1", "--direct_running_mode=in_memory"])
    vocabs, expected = _expected(spec, lines)
    stats = info["stats"]
    assert stats["rows"] == ROWS and stats["dead_letter"]["total"] == 0
    assert {s: stats["splits"][s]["rows"] for s in SPLITS} == {s: sum(expected[s].values()) for s in SPLITS}
    assert min(stats["splits"][s]["rows"] for s in SPLITS) > 0

    # The resolved spec describes the encoded columns: int64 ids with vocab_size, float32 denses.
    resolved = load_spec(out)
    assert [f.vocab_size for f in resolved.categorical] == [len(v) for v in vocabs]
    assert resolved.feature("C1").vocabulary.file == "vocab/C1.txt" and fileio.is_complete(out)
    assert {f.name: f.num_rows for f in resolved.categorical} == {f"C{k + 1}": len(v) + 1 for k, v in enumerate(vocabs)}
    with open(os.path.join(out, "vocab", "C3.txt")) as fh:
        assert fh.read().split("\n")[:-1] == list(vocabs[2])

    for split in SPLITS:
        got = collections.Counter()
        for batch in data.read_split(out, split, batch_size=16):
            n = batch["label"].shape[0]
            for i in range(n):
                got[tuple(sorted((k, v[i, 0].numpy().item()) for k, v in batch.items()))] += 1
        assert got == expected[split], split

    # A backbone trains on it and exports (primary head only).
    from zoo import train

    summary = train.run(out, "configs/models/dcnv2_test.yaml", str(tmp_path / "train"), ["baseline"],
                        export_root=str(tmp_path / "saved_models"), verbose=0)
    assert summary["variants"]["baseline"]["overall"]["rows"] == stats["splits"]["test"]["rows"]
    assert os.path.isdir(summary["export"]["path"])

"""The synthetic generator (version 2) as a known answer, and its oracle column through Beam and the reader.

The generator's pinned rows and planted statistics; the CSV writer's text parses back to the
generated values; and the true click probability ``p_true`` goes raw CSV -> Beam job -> TFRecords
-> ``zoo.data.read_split`` unchanged, where the oracle's NE (``zoo.evaluation.oracle_metrics``) equals a
hand computation.
"""

import math
import os

import numpy as np
import pytest

from beam_jobs import build_tfrecords
from zoo.datasets.synthetic import HEAD_Z, TAIL_Z, VERSION, format_rows, generate, round_significant, write_raw
from zoo.spec import PAD_ID, SPLITS, load_spec

SPEC_PATH = "configs/datasets/synthetic.yaml"


def test_generator_version_2_pinned_rows_seed_0():
    t = generate(rows=20, seed=0)
    assert VERSION == 2
    assert t["user_id"][:3].tolist() == [19515, 2828, 18094]
    assert t["item_id"][:3].tolist() == [400, 485, 683]
    assert t["price"][:3].tolist() == [-0.20237, -1.63989, -0.4526]
    assert t["discount"][:3].tolist() == [0.767, 0.8177, 0.3808]
    assert t["user_value"][:3].tolist() == [-1.45158, 0.78673, 0.61714]
    assert t["recent_categories"][:3].tolist() == [[15, 15, 8, 6, 15, -1, -1, -1], [14, 16, 3, 3, 3, 3, -1, -1],
                                                   [-1] * 8]
    assert t["p_true"][:3].tolist() == [0.1745674, 0.09571193, 0.4159586]
    assert t["click"][:3].tolist() == [0, 0, 1]
    again = generate(rows=20, seed=0)
    assert all(np.array_equal(t[k], again[k]) for k in t)  # deterministic


def test_generator_planted_shares_and_base_rates():
    t = generate(rows=200_000, seed=0)
    z = t["user_value"]
    cohort = np.where(z >= HEAD_Z, "head", np.where(z < TAIL_Z, "tail", "majority"))
    share = {c: float(np.mean(cohort == c)) for c in ("tail", "majority", "head")}
    assert share["tail"] == pytest.approx(0.05, abs=0.01) and share["head"] == pytest.approx(0.05, abs=0.01)
    assert share["majority"] == pytest.approx(0.90, abs=0.015)
    # The docstring's base rates (~0.12 / ~0.27 / ~0.45), and the clicks follow p_true within each cohort.
    expected = {"tail": 0.12, "majority": 0.27, "head": 0.45}
    for c, rate in expected.items():
        y, p = t["click"][cohort == c], t["p_true"][cohort == c]
        assert p.mean() == pytest.approx(rate, abs=0.02)
        assert abs(y.mean() - p.mean()) < 4 * math.sqrt(np.sum(p * (1 - p))) / len(p)
    # Every user has three distinct favourites: a row's recent ids take at most three values.
    recent = t["recent_categories"]
    lengths = (recent != PAD_ID).sum(axis=1)
    assert set(np.unique(lengths)) == set(range(9))
    assert np.all((recent[:, 1:] == PAD_ID) >= (recent[:, :-1] == PAD_ID))  # ids first, then padding
    for user in np.unique(t["user_id"])[:50]:
        ids = recent[t["user_id"] == user]
        assert len(set(ids[ids != PAD_ID].tolist())) <= 3
    # Without the planted contrast the head and tail follow the majority's model (its +0.2 z slope only).
    flat = generate(rows=200_000, seed=0, contrast=False)
    tail_rate = flat["p_true"][cohort == "tail"].mean()
    assert 0.15 < tail_rate < flat["p_true"][cohort == "majority"].mean()


def test_p_true_has_seven_significant_digits_and_the_csv_holds_the_generated_values():
    p = np.array([0.123456789, 0.00099999999, 0.0999999996, 0.999999996, 3.14159265e-4])
    assert round_significant(p).tolist() == [0.1234568, 0.001, 0.1, 1.0, 0.0003141593]
    t = generate(rows=500, seed=3, n_users=40, n_items=30)
    assert t["user_id"].max() < 40 and t["item_id"].max() < 30
    columns = load_spec(SPEC_PATH).raw_format.columns
    lines = format_rows(t, columns).decode().splitlines()
    assert len(lines) == 500
    for r, line in enumerate(lines):
        fields = dict(zip(columns, line.split(",")))
        assert [int(x) for x in fields["recent_categories"].split()] == [x for x in t["recent_categories"][r] if x >= 0]
        for name in ("price", "discount", "user_value", "p_true"):
            assert float(fields[name]) == t[name][r]  # the text parses to exactly the generated float64
        digits = fields["p_true"].replace("0.", "", 1).lstrip("0").rstrip("0")
        assert len(digits) <= 7
        for name in ("user_id", "item_id", "item_category", "hour", "device", "click"):
            assert int(fields[name]) == t[name][r]


def _read_all(data_dir, spec, key):
    from zoo import data

    out = []
    for split in SPLITS:
        for batch in data.read_split(data_dir, split, 4096, spec=spec).as_numpy_iterator():
            out.append(batch[key][:, 0])
    return np.concatenate(out)


def test_synthetic_p_true_reaches_the_tfrecords_unchanged(tmp_path):
    spec = load_spec(SPEC_PATH)
    raw = write_raw(spec, None, str(tmp_path / "raw"), rows=600, seed=5, malformed_rows=4)
    table = generate(rows=600, seed=5)
    build_tfrecords.run(["--spec", SPEC_PATH, "--input", str(tmp_path / "raw" / "*.csv"),
                         "--output", str(tmp_path / "data"), "--num_shards", "1", "--direct_running_mode=in_memory"])
    assert len(raw) == 1
    stored = _read_all(str(tmp_path / "data"), spec, "p_true")
    assert np.array_equal(np.sort(stored), np.sort(table["p_true"].astype(np.float32)))


TINY_SPEC = """
name: tiny_oracle
label: y
user_id: user
format: {columns: [user, y, x, truth, split], split_column: split}
defaults: {embedding_dim: 4}
features:
  - {name: user, kind: categorical, vocab_size: 10}
  - {name: x, kind: dense}
  - {name: truth, kind: dense, input: false}
cohort_axes:
  - {name: side, feature: x, boundaries: [0.0], cohorts: [neg, pos]}
oracle: truth
"""
# user, y, x, truth (the true P(y=1|x) as written), split
TINY_ROWS = [
    (1, 1, -1.0, 0.7, "test"), (2, 0, -2.0, 0.2, "test"), (3, 0, 1.0, 0.4, "test"), (4, 1, 2.0, 0.9, "test"),
    (5, 1, 0.5, 0.0012345, "test"), (6, 0, 3.0, 0.3333333, "test"),
    (7, 1, 1.0, 0.5, "train"), (8, 0, -1.0, 0.5, "valid"),
]


def test_oracle_metrics_equal_ne_of_the_stored_true_probabilities(tmp_path):
    from zoo.evaluation import format_report, oracle_metrics, predict_split

    (tmp_path / "spec.yaml").write_text(TINY_SPEC)
    os.makedirs(tmp_path / "raw")
    with open(tmp_path / "raw" / "rows.csv", "w") as fh:
        fh.write("user,y,x,truth,split\n" + "".join(f"{u},{y},{x},{t},{s}\n" for u, y, x, t, s in TINY_ROWS))
    out = str(tmp_path / "data")
    build_tfrecords.run(["--spec", str(tmp_path / "spec.yaml"), "--input", str(tmp_path / "raw" / "*.csv"),
                         "--output", out, "--num_shards", "1", "--direct_running_mode=in_memory"])
    spec = load_spec(out)
    assert spec.oracle == "truth" and [f.name for f in spec.inputs] == ["user", "x"]

    test_rows = sorted((r for r in TINY_ROWS if r[4] == "test"), key=lambda r: r[0])
    y, p, cohorts, truth = predict_split(None, spec, out, "test", 2, oracle=True)
    order = np.argsort(_read_split_users(out, spec))
    assert p is None
    # Stored unchanged: the float32 of the written decimal, no normalization.
    assert truth[order].tolist() == [float(np.float32(r[3])) for r in test_rows]

    def ne(rows):
        ys = [r[1] for r in rows]
        ll = -sum(math.log(t) if yy else math.log(1 - t) for yy, t in zip(ys, [r[3] for r in rows])) / len(rows)
        rate = sum(ys) / len(ys)
        return ll / -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))

    oracle = oracle_metrics(spec, out, "test")
    assert oracle["overall"]["rows"] == 6
    assert oracle["overall"]["ne"] == pytest.approx(ne(test_rows), rel=1e-6)
    assert oracle["cohorts"]["side"]["neg"]["ne"] == pytest.approx(ne([r for r in test_rows if r[2] < 0]), rel=1e-6)
    assert oracle["cohorts"]["side"]["pos"]["ne"] == pytest.approx(ne([r for r in test_rows if r[2] >= 0]), rel=1e-6)

    # The report prints an oracle row beside the variants, and the gap closed per cohort.
    from zoo import metrics

    def shifted(d):
        return {"overall": dict(oracle["overall"], ne=oracle["overall"]["ne"] + d),
                "cohorts": {"side": {k: dict(v, ne=v["ne"] + d) for k, v in oracle["cohorts"]["side"].items()}}}

    base, c2al = shifted(0.2), shifted(0.1)
    summary = {"variants": {"baseline": base, "c2al": c2al}, "oracle": oracle,
               "ne_diff_percent": metrics.ne_diff(c2al, base), "gap_closed": metrics.gap_closed(base, c2al, oracle),
               "c2al": {"axis": "side", "head": "pos", "tail": "neg"}}
    report = format_report(summary)
    assert any(line.split()[:2] == ["oracle", "6"] for line in report.splitlines())
    assert "oracle gap closed overall (C2AL vs baseline): +0.500" in report
    assert f"NE[oracle] {oracle['cohorts']['side']['pos']['ne']:.4f}" in report
    assert report.count("gap_closed +0.500") == 2
    del summary["oracle"], summary["gap_closed"]
    assert "oracle" not in format_report(summary)  # datasets without an oracle print as before


def _read_split_users(data_dir, spec):
    from zoo import data

    return np.concatenate([b["user"][:, 0] for b in data.read_split(data_dir, "test", 2, spec=spec).as_numpy_iterator()])

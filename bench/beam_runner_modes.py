"""Times the Beam job (beam_jobs.build_tfrecords) under the DirectRunner's in-process and
multi-process modes on the synthetic data, to choose the default mode.

    python bench/beam_runner_modes.py [--rows 200000] [--repeats 3]

Each run is a fresh ``python -m beam_jobs.build_tfrecords`` process (TensorFlow import, worker
start-up and pipeline construction included), so the numbers are what a user waits for. Runs of
the two modes are interleaved. Prints a table and writes bench/results/beam_runner_modes.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from zoo.datasets.synthetic import write_raw  # noqa: E402
from zoo.spec import load_spec  # noqa: E402

SPEC = os.path.join(ROOT, "configs", "datasets", "synthetic.yaml")
MODES = {
    "in_memory": ["--direct_running_mode=in_memory"],
    "multi_processing_2": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results", "beam_runner_modes.json"))
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="beam_modes_")
    raw = write_raw(load_spec(SPEC), None, os.path.join(work, "raw"), rows=args.rows)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for rep in range(args.repeats):
        for mode, flags in MODES.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "beam_jobs.build_tfrecords", "--spec", SPEC, "--input", raw[0],
                            "--output", os.path.join(work, mode), *flags],
                           check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
            times[mode].append(time.perf_counter() - start)
            print(f"run {rep + 1}/{args.repeats} {mode}: {times[mode][-1]:.1f} s", flush=True)

    rows = []
    for mode, ts in times.items():
        median = statistics.median(ts)
        rows.append({"mode": mode, "flags": MODES[mode], "seconds": [round(t, 2) for t in ts],
                     "median_seconds": round(median, 2), "rows_per_second": round(args.rows / median)})
    print(f"\n{'mode':<20} {'median s':>9} {'rows/s':>8}  runs")
    for r in rows:
        print(f"{r['mode']:<20} {r['median_seconds']:>9.1f} {r['rows_per_second']:>8d}  {r['seconds']}")
    result = {
        "benchmark": "beam_runner_modes", "rows": args.rows, "repeats": args.repeats, "results": rows,
        "faster": min(rows, key=lambda r: r["median_seconds"])["mode"],
        "environment": {"cpu_count": os.cpu_count(), "machine": platform.machine(),
                        "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")},
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as fh:
        json.dump(result, fh, indent=2)
    print(f"\nfaster: {result['faster']}; recorded in {args.output}")


if __name__ == "__main__":
    main()

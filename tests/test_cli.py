"""The command-line entry points: quiet start-up (``--verbose`` brings the noise back), a user error
as one line on stderr with exit status 1 (``--debug``: the traceback), and the Beam jobs' progress."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import pytest

from helpers import ROOT, SYNTHETIC_SPEC_PATH, clean_env

NOISE = ("I0000", "E0000", "absl::InitializeLog", "oneDNN", "cuInit", "apitools", "Discarding unparseable args",
         "semi_persistent_directory", "Logging handler created")


def _run(args, cwd):
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**clean_env(), "PYTHONPATH": ROOT})
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def raw_rows(tmp_path_factory):
    from zoo import datasets
    from zoo.spec import load_spec

    root = tmp_path_factory.mktemp("cli")
    datasets.write_raw(load_spec(SYNTHETIC_SPEC_PATH), None, str(root / "raw"), rows=400, seed=1, malformed_rows=2)
    return root


def test_beam_job_is_quiet_logs_progress_and_verbose_brings_the_noise_back(raw_rows):
    args = ["-m", "beam_jobs.build_tfrecords", "--spec", SYNTHETIC_SPEC_PATH, "--input", str(raw_rows / "raw" / "*.csv")]
    code, out, err = _run(args + ["--output", str(raw_rows / "quiet")], raw_rows)
    assert code == 0, err
    assert "rows: train=" in out and "dead letters: 2" in out
    lines = err.splitlines()
    assert lines and all("beam_jobs.progress" in ln for ln in lines), err  # nothing but progress lines
    # A worker's running totals (its last line when the DoFn is torn down; a runner may stop a worker
    # process before that, so the lines need not add up to the job's 402 lines).
    for ln in lines:
        m = re.search(r"\(this worker\): ([\d,]+) rows read, ([\d,]+) written, ([\d,]+) dead-lettered", ln)
        read, written, dead = (int(g.replace(",", "")) for g in m.groups())
        assert read == written + dead and 0 < read <= 402, ln
    code, _, err = _run(args + ["--output", str(raw_rows / "verbose"), "--verbose"], raw_rows)
    assert code == 0 and "Discarding unparseable args" in err  # Beam's worker start-up, let through


def test_zoo_cli_errors_are_one_line_without_start_up_noise(tmp_path):
    missing = str(tmp_path / "nowhere")
    code, out, err = _run(["-m", "zoo.train", "--data", missing, "--output", str(tmp_path / "run")], tmp_path)
    assert code == 1 and out == ""
    assert err == (f"python -m zoo.train: error: {missing}: no such spec file or data directory "
                   "(--debug for the traceback)\n")
    code, _, err = _run(["-m", "zoo.train", "--data", missing, "--output", str(tmp_path / "run"), "--debug"],
                        tmp_path)
    assert code == 1 and "Traceback (most recent call last)" in err and "FileNotFoundError" in err
    assert not any(n in err for n in ("I0000", "absl::InitializeLog", "cuInit"))  # quiet even with --debug


@pytest.mark.parametrize("content, message", [
    (None, "no file matches"),
    ("", "the 1 matching file(s) are empty"),
    ("click,user_id\n", "no rows in the 1 matching file(s) (header lines only)"),
])
def test_build_tfrecords_refuses_missing_and_empty_inputs_in_one_line(tmp_path, capsys, content, message):
    from beam_jobs import build_tfrecords
    from beam_jobs.options import job_main

    pattern = str(tmp_path / "raw" / "*.csv")
    if content is not None:
        (tmp_path / "raw").mkdir()
        (tmp_path / "raw" / "part.csv").write_text(content)
    argv = ["--spec", SYNTHETIC_SPEC_PATH, "--input", pattern, "--output", str(tmp_path / "out"),
            "--direct_running_mode=in_memory"]
    assert job_main("python -m beam_jobs.build_tfrecords", build_tfrecords.run, argv) == 1
    err = capsys.readouterr().err
    assert err == f"python -m beam_jobs.build_tfrecords: error: --input {pattern}: {message} (--debug for the traceback)\n"
    assert not os.path.exists(tmp_path / "out" / "_SUCCESS")  # nothing promoted


def test_bad_yaml_and_spec_errors_name_the_file(tmp_path, capsys):
    from beam_jobs import build_tfrecords
    from beam_jobs.options import job_main

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfeatures: [\n")
    argv = ["--spec", str(bad), "--input", "x", "--output", str(tmp_path / "out")]
    assert job_main("job", build_tfrecords.run, argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"job: error: {bad}: not valid YAML (") and err.count("\n") == 1
    with pytest.raises(Exception, match="not valid YAML"):
        job_main("job", build_tfrecords.run, argv + ["--debug"])


def test_export_and_cohorts_clis_report_one_line(tmp_path, capsys):
    from zoo.cohorts import cli as cohorts_cli
    from zoo.export import cli as export_cli

    missing = str(tmp_path / "model.keras")
    assert export_cli.main(["--spec", SYNTHETIC_SPEC_PATH, "--model", missing, "--model-name", "m",
                            "--export-root", str(tmp_path / "sm")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("python -m zoo.export: error: ") and missing in err and err.count("\n") == 1
    assert cohorts_cli.main(["--data", str(tmp_path / "nodata"), "--model", missing, "--axis", "a",
                             "--output", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("python -m zoo.cohorts: error: ") and err.count("\n") == 1


def test_run_reporting_errors_sorts_user_errors_from_bugs(capsys):
    from zoo import cli

    def fails(err):
        def body():
            raise err
        return body

    assert cli.run_reporting_errors("p", fails(ValueError("feature 'x':\n  bad value"))) == 1
    assert capsys.readouterr().err == "p: error: feature 'x': bad value (--debug for the traceback)\n"
    assert cli.run_reporting_errors("p", fails(KeyError("key 'k' missing"))) == 1
    assert capsys.readouterr().err == "p: error: key 'k' missing (--debug for the traceback)\n"
    assert cli.run_reporting_errors("p", lambda: 3) == 3 and cli.run_reporting_errors("p", lambda: None) == 0
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        cli.run_reporting_errors("p", lambda: 1 / 0)
    with pytest.raises(ValueError):
        cli.run_reporting_errors("p", fails(ValueError("v")), debug=True)
    assert cli.run_reporting_errors("p", fails(ValueError("v")), hint=lambda e: "better") == 1
    assert capsys.readouterr().err == "p: error: better (--debug for the traceback)\n"


def test_error_line_strips_tensorflow_op_context():
    import tensorflow as tf

    from zoo import cli

    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        tf.debugging.assert_equal(tf.constant(1), tf.constant(2), message="shapes differ")
    line = cli.error_line(raised.value)
    assert line.startswith("InvalidArgumentError: ") and "\n" not in line and "[Op:" not in line


def test_launched_module_only_while_python_locates_a_dash_m_module(monkeypatch):
    from zoo import cli

    monkeypatch.setattr(sys, "argv", ["-m", "--data", "d"])
    monkeypatch.setattr(sys, "orig_argv", ["python", "-m", "zoo.train", "--data", "d"])
    assert cli.launched_module() == "zoo.train"
    monkeypatch.setattr(sys, "argv", ["/path/zoo/train.py", "--data", "d"])  # located: argv[0] is the file
    assert cli.launched_module() is None
    monkeypatch.setattr(sys, "argv", ["script.py"])
    monkeypatch.setattr(sys, "orig_argv", ["python", "script.py"])
    assert cli.launched_module() is None


def test_progress_counts_and_logs_at_intervals(caplog, monkeypatch):
    from beam_jobs import progress

    clock = iter([0.0, 1.0, 20.0, 20.0, 21.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger=progress.LOGGER):
        p = progress.Progress("job", interval_s=10.0)  # t=0
        p.add(1000, 990, 10)  # t=1: no line yet
        assert not caplog.records
        p.add(500, 500, 0)    # t=20: a line (rate from its own clock reading, t=20)
    assert (p.read, p.written, p.dead) == (1500, 1490, 10)
    assert [r.getMessage() for r in caplog.records] == [
        "job: progress (this worker): 1,500 rows read, 1,490 written, 10 dead-lettered; 75 rows/s"]


def test_a_worker_failure_is_one_line_in_the_default_multi_process_runner(raw_rows):
    """A corrupt gzip input fails inside a Beam worker process: the workers' tracebacks and the
    runner's error logs are a repeat of the failure the driver reports, in one line."""
    import gzip

    data = bytearray(gzip.compress((raw_rows / "raw" / "synthetic.csv").read_bytes()))
    data[len(data) // 2] ^= 0xFF
    (raw_rows / "gz").mkdir()
    (raw_rows / "gz" / "rows.csv.gz").write_bytes(bytes(data))
    code, out, err = _run(["-m", "beam_jobs.build_tfrecords", "--spec", SYNTHETIC_SPEC_PATH, "--input",
                           str(raw_rows / "gz" / "*.csv.gz"), "--output", str(raw_rows / "gz_out")], raw_rows)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith(
        f"python -m beam_jobs.build_tfrecords: error: {raw_rows / 'gz' / 'rows.csv.gz'}: cannot read the file: "
        "it is corrupt"), err


def test_stderr_filter_drops_noise_and_worker_error_reports_only():
    from zoo.cli import StderrFilter

    keep = StderrFilter(["apitools not found"])
    lines = [b"INFO:beam_jobs.progress:build_tfrecords: progress\n", b"WARNING:root:apitools not found, ...\n",
             b"Traceback (most recent call last):\n", b'  File "x.py", line 1\n', b"ValueError: boom\n",
             b"ERROR:apache_beam.runners.worker.sdk_worker:Error processing\n", b"  more\n",
             b"WARNING:beam_jobs:a real warning\n", b"plain text after a warning\n"]
    assert [ln for ln in lines if keep.passes(ln)] == [lines[0], lines[7], lines[8]]

"""zoo.distribution / ``zoo.train --distribution``: data parallel on 2 virtual CPU devices and on 2
local processes, model parallel (row-sharded tables) and TensorFlow's MirroredStrategy follow the
one-device trajectory of the same seed and global batch (baseline and C2AL); the processes together
see every row of the stream once; two processes SIGKILLed mid-epoch resume to the uninterrupted run;
a sharded model saves, reloads and exports the served graph of the unsharded one.

The JAX runs are subprocesses (this suite's process runs TensorFlow): one with 1 device, one with
``--xla_force_host_platform_device_count=2``, and two processes of 1 device each joined by
``zoo.distribution.initialize`` on loopback (gloo collectives). Tolerance 1e-5 everywhere: only the
order of floating-point sums differs (measured about 1e-7).
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from helpers import ROOT, clean_env, eval_batch, inputs_of, model_weights, synthetic_data_dir
from zoo import data as data_lib
from zoo import distribution as distribution_lib
from zoo import train
from zoo.distribution import check_distribution
from zoo.spec import load_spec

pytestmark = pytest.mark.tf_only  # the JAX parts run in their own processes

CONFIG = "configs/models/dcnv2_test.yaml"  # batch 256
EPOCHS, BATCH, TOL = 3, 256, 1e-5

RUN = textwrap.dedent("""
    def run(data, name, variant, out_dir, **kwargs):
        summary = train.run(data, CONFIG, out_dir, [variant], max_epochs=EPOCHS, verbose=0, distribution=name, **kwargs)
        r = summary["variants"][variant]
        return {"distribution": summary["distribution"], "loss": r["training"]["history"]["loss"],
                "valid": r["training"]["history"]["val_logloss_exact"], "test": r["overall"]["log_loss"],
                "dir": out_dir}
""")

PREAMBLE = textwrap.dedent(f"""
    import json, os, sys, tempfile
    sys.path.insert(0, "tests")
    import keras, numpy as np
    from zoo import train
    CONFIG, EPOCHS = {CONFIG!r}, {EPOCHS}
""") + RUN

ONE_DEVICE = PREAMBLE + textwrap.dedent("""
    data, out = sys.argv[1], sys.argv[2]
    result = {"devices": len(keras.distribution.list_devices())}
    for variant in ("baseline", "c2al"):
        result[variant] = run(data, "data_parallel", variant, os.path.join(out, variant))
    print("RESULT " + json.dumps(result))
""")

TWO_DEVICES = PREAMBLE + textwrap.dedent("""
    from helpers import eval_batch, inputs_of
    from zoo.distribution import check_model_shards, distribution_scope
    from zoo.spec import load_spec
    data, out = sys.argv[1], sys.argv[2]
    result = {"devices": len(keras.distribution.list_devices())}
    result["data_parallel"] = run(data, "data_parallel", "baseline", os.path.join(out, "dp"))
    result["model_parallel"] = run(data, "model_parallel", "baseline", os.path.join(out, "mp"))
    result["model_parallel_c2al"] = run(data, "model_parallel", "c2al", os.path.join(out, "mp_c2al"), model_shards=2)
    spec = load_spec(data)
    x = inputs_of(spec, eval_batch(spec, data))
    with distribution_scope("model_parallel"):  # the sharded model reloads sharded
        model = keras.saving.load_model(os.path.join(out, "mp", "baseline", "model.keras"))
        table = model.get_layer("backbone").encoder.embedders[0]
        result["table"] = {"spec": list(table.embeddings.value.sharding.spec), "rows": table.num_rows,
                           "table_rows": table.table_rows,
                           "padding_max": float(np.abs(np.asarray(table.embeddings)[table.num_rows:]).max()
                                                if table.table_rows > table.num_rows else 0.0)}
        result["dense_specs"] = [list(v.value.sharding.spec) for v in model.weights if "embeddings" not in v.path]
        np.save(os.path.join(out, "mp_predictions.npy"), np.asarray(model.predict_on_batch(x)["primary"]))
    errors = {}
    for key, call in {
        "batch": lambda: train.distributed_model_config({"training": {"batch_size": 255}, "embedding": None},
                                                        "data_parallel", None),
        "shards": lambda: check_model_shards("model_parallel", 3),
        "distributed": lambda: train.distributed_model_config(
            {"training": {"batch_size": 256}, "embedding": {"type": "distributed"}}, "model_parallel", None),
    }.items():
        try:
            call()
        except ValueError as err:
            errors[key] = str(err)
    result["errors"] = errors
    print("RESULT " + json.dumps(result))
""")

PROCESS = PREAMBLE + textwrap.dedent("""
    from zoo import data as data_lib, distribution
    from zoo.spec import load_spec
    port, process, data, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    distribution.initialize(f"localhost:{port}", 2, process)
    spec = load_spec(data)
    result = {"process": distribution.process_index(), "processes": distribution.process_count(),
              "devices": len(keras.distribution.list_devices())}
    stream, steps, _ = data_lib.training_batches(data, spec, BATCH, seed=0, full_batches=True)
    local = distribution.make_distribution("data_parallel").distribute_dataset(stream)  # what model.fit does
    result["steps"] = steps
    result["batches"] = [{k: v.reshape(len(v), -1)[:, 0].tolist() for k, v in b.items()}
                         for b in local.take(steps).as_numpy_iterator()]
    result["run"] = run(data, "data_parallel", "baseline", out)
    result["run_c2al"] = run(data, "data_parallel", "c2al", out)
    print("RESULT " + json.dumps(result))
""").replace("BATCH", str(BATCH))

# argv: port, process id, data, output, model config, global step to SIGKILL itself at (0: none).
RESUMED_PROCESS = PREAMBLE + textwrap.dedent("""
    import signal
    from zoo import checkpoint, distribution
    port, process, data, out, CONFIG, kill_step = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6], int(sys.argv[6])
    distribution.initialize(f"localhost:{port}", 2, process)
    if kill_step:  # both processes die at that step, the chief once its checkpoint of the step is written
        original = checkpoint.ResumeCallback.on_train_batch_end

        def on_train_batch_end(self, batch, logs=None):
            original(self, batch, logs)
            if self.step == kill_step:
                os.kill(os.getpid(), signal.SIGKILL)
        checkpoint.ResumeCallback.on_train_batch_end = on_train_batch_end
    print("RESULT " + json.dumps(run(data, "data_parallel", "baseline", out)))
""")

exec(RUN)  # run(): the same function here as in every subprocess

MIRRORED = textwrap.dedent(f"""
    import json, os, sys, tempfile
    sys.path.insert(0, "tests")
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from zoo import train
    CONFIG, EPOCHS = {CONFIG!r}, {EPOCHS}
""") + RUN + textwrap.dedent("""
    data, out = sys.argv[1], sys.argv[2]
    print("RESULT " + json.dumps({v: run(data, "mirrored", v, os.path.join(out, v)) for v in ("baseline", "c2al")}))
""")


def result_of(done: subprocess.CompletedProcess) -> dict:
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def run_script(script: str, args, backend: str = "jax", devices: int = 1) -> dict:
    env = clean_env(KERAS_BACKEND=backend, PYTHONPATH=ROOT,
                    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return result_of(subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=ROOT, env=env,
                                    capture_output=True, text=True, timeout=600))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return synthetic_data_dir(tmp_path_factory, "distribution_data", seed=1)


@pytest.fixture(scope="module")
def one_device(data_dir, tmp_path_factory):
    return run_script(ONE_DEVICE, [data_dir, tmp_path_factory.mktemp("one")])


@pytest.fixture(scope="module")
def two_devices(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("two")
    return {**run_script(TWO_DEVICES, [data_dir, out], devices=2), "out": str(out)}


def free_port() -> int:
    with socket.socket() as sock:  # a free loopback port for the coordinator
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def two_jax_processes(script: str, args, logs) -> list[subprocess.CompletedProcess]:
    """Runs ``script port <process id> *args`` as processes 0 and 1 of one JAX run (1 CPU device each)."""
    port = free_port()
    env = clean_env(KERAS_BACKEND="jax", PYTHONPATH=ROOT, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    # Output to files, not pipes: a process blocked on a full pipe would stall the other at a collective.
    files = [(open(logs / f"{i}.out", "w+"), open(logs / f"{i}.err", "w+")) for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", script, str(port), str(i), *map(str, args)], cwd=ROOT,
                              env=env, stdout=stdout, stderr=stderr, text=True) for i, (stdout, stderr) in enumerate(files)]
    done = []
    try:
        for proc, (stdout, stderr) in zip(procs, files):
            proc.wait(timeout=600)
            stdout.seek(0), stderr.seek(0)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout.read(), stderr.read()))
    finally:
        for proc, handles in zip(procs, files):
            proc.kill()
            for handle in handles:
                handle.close()
    return done


@pytest.fixture(scope="module")
def two_processes(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("processes")
    done = two_jax_processes(PROCESS, [data_dir, out], tmp_path_factory.mktemp("process_logs"))
    return {"results": [result_of(d) for d in done], "out": str(out)}


def assert_same_trajectory(run, reference):
    assert len(run["loss"]) == len(reference["loss"]) == EPOCHS
    assert run["loss"] == pytest.approx(reference["loss"], abs=TOL)
    assert run["valid"] == pytest.approx(reference["valid"], abs=TOL)
    assert run["test"] == pytest.approx(reference["test"], abs=TOL)
    assert reference["loss"][-1] < reference["loss"][0]  # it trained


def test_data_parallel_on_two_devices_follows_the_one_device_trajectory(one_device, two_devices):
    assert one_device["devices"] == 1 and two_devices["devices"] == 2
    assert two_devices["data_parallel"]["distribution"] == {"name": "data_parallel", "devices": 2, "processes": 1,
                                                            "model_shards": 1}
    assert_same_trajectory(two_devices["data_parallel"], one_device["baseline"])


def test_model_parallel_follows_the_one_device_trajectory_baseline_and_c2al(one_device, two_devices):
    assert two_devices["model_parallel"]["distribution"] == {"name": "model_parallel", "devices": 2,
                                                             "processes": 1, "model_shards": 2}
    assert_same_trajectory(two_devices["model_parallel"], one_device["baseline"])
    assert_same_trajectory(two_devices["model_parallel_c2al"], one_device["c2al"])


def test_model_parallel_row_shards_the_padded_tables_and_replicates_the_rest(two_devices):
    table = two_devices["table"]
    assert table["spec"] == ["model", None]
    assert table["table_rows"] % 2 == 0 and table["rows"] <= table["table_rows"] < table["rows"] + 2
    assert table["padding_max"] == 0.0  # the padding rows stay zero through training
    assert all("model" not in spec for spec in two_devices["dense_specs"])  # dense layers replicated


def test_a_sharded_model_reloads_and_exports_the_served_graph_of_the_unsharded_model(two_devices, data_dir, tmp_path):
    import tensorflow as tf

    from zoo.export import OUTPUT, SIGNATURE, export_saved_model
    from zoo.model import load_model

    spec = load_spec(data_dir)
    model = load_model(os.path.join(two_devices["out"], "mp", "baseline", "model.keras"))  # unsharded here
    path = export_saved_model(model, spec, str(tmp_path), "model_parallel", eval_data=data_dir)  # verify <= 1e-5
    x = inputs_of(spec, eval_batch(spec, data_dir))
    served = tf.saved_model.load(path).signatures[SIGNATURE](**{k: tf.constant(v) for k, v in x.items()})[OUTPUT]
    sharded = np.load(os.path.join(two_devices["out"], "mp_predictions.npy"))
    assert len(sharded) == len(x[spec.label if spec.label in x else next(iter(x))]) > 200
    np.testing.assert_allclose(served.numpy().ravel(), sharded.ravel(), atol=TOL)


def test_bad_distributed_settings_are_named(two_devices):
    errors = two_devices["errors"]
    assert errors["batch"] == ("training.batch_size: 255 does not split evenly over the 2 batch shards of "
                               "distribution 'data_parallel'; use a multiple of 2")
    assert errors["shards"] == "model_shards: must be a positive divisor of the 2 devices, got 3"
    assert errors["distributed"].startswith("embedding: type 'distributed' (keras_rs")


def test_two_processes_see_every_row_of_the_stream_once(two_processes, data_dir):
    results = sorted(two_processes["results"], key=lambda r: r["process"])
    assert [(r["process"], r["processes"], r["devices"]) for r in results] == [(0, 2, 2), (1, 2, 2)]
    spec = load_spec(data_dir)
    stream, steps, _ = data_lib.training_batches(data_dir, spec, BATCH, seed=0, full_batches=True)
    assert steps == results[0]["steps"] == data_lib.split_rows(data_dir, "train") // BATCH
    reference = list(stream.take(steps).as_numpy_iterator())
    half = BATCH // 2
    for r in results:
        assert len(r["batches"]) == steps
        for batch, full in zip(r["batches"], reference):
            part = slice(r["process"] * half, (r["process"] + 1) * half)  # process i: part i of each global batch
            for key, values in batch.items():
                expected = full[key].reshape(BATCH, -1)[part, 0]
                np.testing.assert_array_equal(np.asarray(values, dtype=expected.dtype), expected, err_msg=key)
    seen = sum(len(b[spec.label]) for r in results for b in r["batches"])
    assert seen == steps * BATCH  # every row of the global batches, none twice


def test_two_processes_follow_the_one_device_trajectory_and_only_the_chief_writes(two_processes, one_device):
    results = sorted(two_processes["results"], key=lambda r: r["process"])
    for r in results:
        assert r["run"]["distribution"] == {"name": "data_parallel", "devices": 2, "processes": 2, "model_shards": 1}
        assert_same_trajectory(r["run"], one_device["baseline"])
        assert_same_trajectory(r["run_c2al"], one_device["c2al"])
    out = two_processes["out"]
    assert sorted(os.listdir(out)) == ["baseline", "c2al", "metrics.json"]
    assert all(os.path.exists(os.path.join(out, v, "model.keras")) for v in ("baseline", "c2al"))


def test_two_sigkilled_processes_resume_to_the_uninterrupted_two_process_run(two_processes, data_dir, tmp_path):
    """Both processes SIGKILLed mid-epoch in epoch 2 (the chief once its checkpoint of that step is
    written, as a preempted job) and started again: they resume from the chief's checkpoint and end with
    the uninterrupted two-process run's history, test metrics and weights, bit for bit."""
    config = tmp_path / "dcnv2_checkpointed.yaml"
    config.write_text(f"base: {ROOT}/{CONFIG}\ntraining: {{checkpoint_every_steps: 1}}\n")
    steps = data_lib.split_rows(data_dir, "train") // BATCH
    kill, out = steps + 2, tmp_path / "run"
    first = two_jax_processes(RESUMED_PROCESS, [data_dir, out, config, kill], tmp_path)
    assert [d.returncode for d in first] == [-9, -9], [d.stderr[-2000:] for d in first]
    assert os.listdir(out / "baseline" / "checkpoint") == [f"step-{kill:012d}"]  # the chief's, none after
    second = two_jax_processes(RESUMED_PROCESS, [data_dir, out, config, 0], tmp_path)
    path = out / "baseline" / "checkpoint" / f"step-{kill:012d}"
    for done in second:
        assert f"baseline: resumed from epoch 2 step {kill} of {path} (2 of the epoch's {steps} steps done)" \
            in done.stdout
        resumed, reference = result_of(done), two_processes["results"][0]["run"]
        assert {k: resumed[k] for k in ("loss", "valid", "test")} == {k: reference[k] for k in ("loss", "valid", "test")}
    a, b = model_weights(out / "baseline"), model_weights(os.path.join(two_processes["out"], "baseline"))
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_mirrored_on_two_cpu_devices_follows_the_one_device_run(data_dir, tmp_path):
    two = run_script(MIRRORED, [data_dir, tmp_path / "two"], backend="tensorflow")
    for variant in ("baseline", "c2al"):
        one = run(data_dir, "mirrored", variant, str(tmp_path / "one" / variant))  # noqa: F821 (exec) 1 CPU device
        assert one["distribution"]["devices"] == 1 and two[variant]["distribution"]["devices"] == 2
        assert_same_trajectory(two[variant], one)


def test_full_batches_run_the_passes_on_as_one_stream(data_dir):
    spec = load_spec(data_dir)
    rows = data_lib.split_rows(data_dir, "train")
    stream, steps, reader = data_lib.training_batches(data_dir, spec, BATCH, seed=4, full_batches=True)
    plain, pass_steps, _ = data_lib.training_batches(data_dir, spec, BATCH, seed=4)
    assert reader == "memory" and steps == rows // BATCH and pass_steps == -(-rows // BATCH)
    full = list(stream.take(3 * rows // BATCH).as_numpy_iterator())  # about 3 passes
    ragged = list(plain.take(3 * pass_steps).as_numpy_iterator())  # 3 passes, each ending with a partial batch
    assert {len(b[spec.label]) for b in full} == {BATCH} and len({len(b[spec.label]) for b in ragged}) == 2
    for key in full[0]:  # the same rows in the same order: the passes' permutations, no row dropped
        rows_full = np.concatenate([b[key] for b in full])
        np.testing.assert_array_equal(rows_full, np.concatenate([b[key] for b in ragged])[:len(rows_full)],
                                      err_msg=key)


def test_docstring_example_runs():
    import layer_checks
    from zoo import distribution

    layer_checks.check_docstring_examples(distribution)


def test_unknown_or_unsupported_distributions_are_named():
    with pytest.raises(ValueError, match=r"^distribution: must be one of \['none', 'data_parallel', "
                                         r"'model_parallel', 'mirrored'\], got 'pipeline'$"):
        check_distribution("pipeline")
    assert keras.backend.backend() == "tensorflow"
    for name in ("data_parallel", "model_parallel"):
        with pytest.raises(ValueError, match=rf"^distribution: '{name}' needs KERAS_BACKEND=jax"):
            check_distribution(name)
    assert check_distribution("none") == "none" and check_distribution("mirrored") == "mirrored"
    with pytest.raises(ValueError, match=r"^model_shards: only for distribution 'model_parallel', got "
                                         r"distribution 'mirrored'$"):
        distribution_lib.check_model_shards("mirrored", 2)
    with pytest.raises(ValueError, match=r"^coordinator: several processes need KERAS_BACKEND=jax"):
        distribution_lib.initialize("localhost:1", 2, 0)

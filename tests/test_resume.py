"""Preemption-safe training (zoo.checkpoint): a ``zoo.train`` run SIGKILLed mid-epoch and started again
ends with the weights, history and test metrics of the uninterrupted run, bit for bit on CPU; an
interrupted checkpoint write is ignored; a checkpoint of another run is refused naming the key.

The kills are real ``SIGKILL``s of a ``python -m``-like subprocess, made deterministic by the
subprocess itself: :data:`KILLER` wraps the checkpoint callback (or ``os.rename``) and sends
``SIGKILL`` to its own process at a chosen global step of a chosen variant, so no cleanup code runs.
"""

import glob
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from helpers import ROOT, clean_env, model_weights, synthetic_data_dir  # noqa: E402

from zoo import checkpoint as checkpoint_lib  # noqa: E402
from zoo import data, train  # noqa: E402
from zoo.spec import load_spec  # noqa: E402

pytestmark = pytest.mark.tf_only

# Dropout (seed-generator state), early stopping and a learning-rate schedule whose state matters
# across the kill: patience 2 with min_delta 0 and 6 epochs; checkpoints every 3 steps.
MODEL_YAML = """\
base: {root}/configs/models/deepfm_test.yaml
hparams: {{dropout: 0.3}}
training: {{max_epochs: 6, early_stopping_patience: 2, reduce_lr_factor: 0.5, reduce_lr_patience: 1,
           min_delta: 0.0, checkpoint_every_steps: 3}}
"""

# argv: kill spec (JSON: {"variant": name, "step": global step} or {"rename_step": step}), then zoo.train's argv.
KILLER = textwrap.dedent("""
    import json, os, signal, sys
    from zoo import checkpoint, train

    kill = json.loads(sys.argv[1])
    if "variant" in kill:
        original = checkpoint.ResumeCallback.on_train_batch_end

        def on_train_batch_end(self, batch, logs=None):
            original(self, batch, logs)
            if os.path.basename(os.path.dirname(self.checkpoint.directory)) == kill["variant"] \\
                    and self.step == kill["step"]:
                os.kill(os.getpid(), signal.SIGKILL)
        checkpoint.ResumeCallback.on_train_batch_end = on_train_batch_end
    else:  # killed while committing the checkpoint of that step: its files are written, not renamed
        rename = os.rename

        def killing_rename(src, dst):
            if os.path.basename(dst) == f"step-{kill['rename_step']:012d}":
                os.kill(os.getpid(), signal.SIGKILL)
            rename(src, dst)
        os.rename = killing_rename
    sys.exit(train.main(sys.argv[2:]))
""")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return synthetic_data_dir(tmp_path_factory, "data", seed=2)


@pytest.fixture(scope="module")
def model_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "deepfm_dropout.yaml"
    path.write_text(MODEL_YAML.format(root=ROOT))
    return str(path)


def argv(data_dir, model_yaml, out, *extra):
    return ["--data", data_dir, "--model", model_yaml, "--output", out, "--seed", "3", *extra]


def killed(kill, args, cwd, env=None):
    """Runs zoo.train in a subprocess that SIGKILLs itself as ``kill`` says; returns its stdout."""
    env = env or clean_env(KERAS_BACKEND="tensorflow", PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-c", KILLER, json.dumps(kill), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == -9, (done.returncode, done.stderr[-3000:])
    return done.stdout


def weights(out, variant):
    return model_weights(os.path.join(out, variant))


def results(out):
    summary = json.load(open(os.path.join(out, "metrics.json")))
    return {v: {k: r[k] for k in ("overall", "cohorts", "training", "epochs_run")}
            for v, r in summary["variants"].items()}, summary


@pytest.fixture(scope="module")
def reference(data_dir, model_yaml, tmp_path_factory):
    """The uninterrupted run (baseline and C2AL) and the steps of one epoch."""
    out = str(tmp_path_factory.mktemp("reference"))
    assert train.main(argv(data_dir, model_yaml, out)) == 0
    _, steps = data.reader_and_steps(data_dir, load_spec(data_dir), 256)
    return out, steps


def test_sigkilled_baseline_and_c2al_resume_to_the_uninterrupted_run(data_dir, model_yaml, reference, tmp_path,
                                                                     capsys):
    ref_out, steps = reference
    out = str(tmp_path / "run")
    assert steps >= 6  # the kills below fall inside an epoch
    # 1. killed in the baseline's second epoch, two steps after its last checkpoint (the kill loses them)
    base_kill = steps + 5 if (steps + 5) % 3 else steps + 4
    killed({"variant": "baseline", "step": base_kill}, argv(data_dir, model_yaml, out), str(tmp_path))
    saved = sorted(os.listdir(os.path.join(out, "baseline", "checkpoint")))
    assert saved == [f"step-{base_kill - base_kill % 3:012d}"]  # only the newest one is kept
    # 2. resumed, then killed in C2AL's third epoch
    c2al_kill = 2 * steps + 4
    first = killed({"variant": "c2al", "step": c2al_kill}, argv(data_dir, model_yaml, out), str(tmp_path))
    at = base_kill - base_kill % 3
    path = os.path.join(out, "baseline", "checkpoint", f"step-{at:012d}")
    assert (f"baseline: resumed from epoch 2 step {at} of {path} ({at - steps} of the epoch's {steps} steps done)"
            in first.splitlines())
    # 3. resumed again, in this process: the baseline's finished fit is restored, C2AL continues
    assert train.main(argv(data_dir, model_yaml, out)) == 0
    printed = capsys.readouterr().out.splitlines()
    assert any(line.startswith("baseline: resumed from epoch ") and line.endswith("(the fit had finished: its final state restored, nothing trained)")
               for line in printed), printed
    at = c2al_kill - c2al_kill % 3
    assert (f"c2al: resumed from epoch 3 step {at} of {os.path.join(out, 'c2al', 'checkpoint', f'step-{at:012d}')} "
            f"({at - 2 * steps} of the epoch's {steps} steps done)") in printed
    # The same weights, bit for bit; the same history, test metrics and protocol record.
    got, summary = results(out)
    want, _ = results(ref_out)
    for variant in ("baseline", "c2al"):
        a, b = weights(out, variant), weights(ref_out, variant)
        assert sorted(a) == sorted(b)
        worst = max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) if a[k].size else 0.0 for k in a)
        assert worst == 0.0, f"{variant}: max weight difference {worst}"
        assert got[variant] == want[variant]
    # The protocol's state mattered: the learning rate was lowered before the kills' epochs ended.
    history = want["baseline"]["training"]["history"]
    assert min(history["lr"]) < max(history["lr"]), history["lr"]
    assert not os.path.exists(os.path.join(out, "baseline", "checkpoint"))  # a finished run keeps none
    assert summary["ne_diff_percent"] == json.load(open(os.path.join(ref_out, "metrics.json")))["ne_diff_percent"]


def test_a_checkpoint_write_killed_before_its_commit_is_ignored(data_dir, model_yaml, reference, tmp_path, capsys):
    """SIGKILL between writing checkpoint step 6's files and renaming them: the resume uses step 3."""
    ref_out, _ = reference
    out = str(tmp_path / "run")
    killed({"rename_step": 6}, argv(data_dir, model_yaml, out, "--variants", "baseline"), str(tmp_path))
    names = sorted(os.listdir(os.path.join(out, "baseline", "checkpoint")))
    assert names[0] == f"step-{3:012d}" and len(names) == 2 and names[1].startswith("tmp-000000000006-")
    # Another seed: refused in one line naming the file and the key, nothing trained or deleted.
    assert train.main(argv(data_dir, model_yaml, out, "--variants", "baseline", "--seed", "4")) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and (f"{out}/baseline/checkpoint/step-{3:012d}/state.json: written by another run: "
                   "seed is 3 there, 4 here; rerun with --no-resume to start over") in err, err
    assert train.main(argv(data_dir, model_yaml, out, "--variants", "baseline")) == 0
    assert "baseline: resumed from epoch 1 step 3 of " in capsys.readouterr().out
    a, b = weights(out, "baseline"), weights(ref_out, "baseline")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert results(out)[0]["baseline"] == results(ref_out)[0]["baseline"]


def _checkpointed_run(tmp_path, fingerprint, step=4):
    """A hand-made checkpoint of ``step`` (its arrays do not matter to the checks below)."""
    ckpt = checkpoint_lib.Checkpoint(str(tmp_path), fingerprint)
    state = checkpoint_lib.State(step=step, epochs=0, finished=False, history={}, callbacks={}, learning_rate=1e-3,
                                 seconds=0.0, fingerprint=ckpt.fingerprint,
                                 variables={g: [] for g in ("model", "optimizer", "metrics", "best_weights")})
    return ckpt, ckpt.write(state, {})


def test_an_interrupted_write_is_ignored_and_the_previous_checkpoint_used(tmp_path):
    fingerprint = {"seed": 0, "model_config": {"training": {"batch_size": 256}}}
    _, path = _checkpointed_run(tmp_path, fingerprint, step=4)
    directory = os.path.dirname(path)
    half = os.path.join(directory, "tmp-000000000008-12345")  # a later write that died half way
    os.makedirs(half)
    with open(os.path.join(half, "arrays.npz"), "wb") as fh:
        fh.write(b"PK\x03\x04 truncated")
    restored = checkpoint_lib.Checkpoint(str(tmp_path), fingerprint).restored
    assert restored.path == path and restored.state.step == 4
    # The next write clears the dead temp directory and keeps only the newest checkpoint.
    _, newer = _checkpointed_run(tmp_path, fingerprint, step=7)
    assert sorted(os.listdir(directory)) == [os.path.basename(newer)]
    # resume=False deletes the checkpoints: nothing to resume from.
    assert checkpoint_lib.Checkpoint(str(tmp_path), fingerprint, resume=False).restored is None
    assert not os.path.exists(directory)


def _batch_loss_steps(log_dir: str) -> list[int]:
    """The steps of every ``batch_loss`` summary under ``log_dir``, in the order written."""
    import tensorflow as tf

    steps = []
    for path in sorted(glob.glob(os.path.join(log_dir, "train", "events.out.tfevents.*")), key=os.path.getmtime):
        for event in tf.compat.v1.train.summary_iterator(path):
            steps += [int(event.step) for v in event.summary.value if v.tag == "batch_loss"]
    return steps


@pytest.mark.parametrize("callback", ["keras", "resumable"])
def test_a_resumed_fit_writes_its_batch_summaries_after_the_first_fits(tmp_path, callback):
    """Two fits of one model into one log directory, the second from the first's optimizer step (what a
    resume does): Keras' own callback writes steps 1-5 twice; ResumableTensorBoard writes 1-10 once."""
    import keras

    cls = checkpoint_lib.ResumableTensorBoard if callback == "resumable" else keras.callbacks.TensorBoard
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)).astype("float32"), rng.normal(size=(40, 1)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    log_dir = str(tmp_path / "tb")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[cls(log_dir, update_freq=1)])
    model.fit(x, y, batch_size=8, epochs=2, initial_epoch=1, verbose=0, shuffle=False,
              callbacks=[cls(log_dir, update_freq=1)])
    assert int(model.optimizer.iterations) == 10
    want = list(range(1, 11)) if callback == "resumable" else [1, 2, 3, 4, 5] * 2
    assert _batch_loss_steps(log_dir) == want


@pytest.mark.parametrize("change, key, old, new", [
    ({"seed": 1}, "seed", "0", "1"),
    ({"model_config": {"training": {"batch_size": 512}}}, "model_config.training.batch_size", "256", "512"),
    ({"data": "b" * 4}, "data", '"aaaa"', '"bbbb"'),
])
def test_a_checkpoint_of_another_run_is_refused_naming_the_file_and_key(tmp_path, change, key, old, new):
    fingerprint = {"seed": 0, "model_config": {"training": {"batch_size": 256}}, "data": "a" * 4}
    _, path = _checkpointed_run(tmp_path, fingerprint)
    with pytest.raises(checkpoint_lib.CheckpointError) as err:
        checkpoint_lib.Checkpoint(str(tmp_path), {**fingerprint, **change})
    assert str(err.value) == (f"{path}/state.json: written by another run: {key} is {old} there, {new} here; "
                              "rerun with --no-resume to start over")


def test_a_data_parallel_jax_run_resumes_to_the_uninterrupted_run(data_dir, model_yaml, tmp_path):
    """``--distribution data_parallel`` on 2 virtual JAX CPU devices: SIGKILLed mid-epoch in its second
    epoch and resumed, the same weights and metrics bit for bit (reading ``callback.model`` syncs the
    JAX state; assigned arrays are laid out on both devices)."""
    env = clean_env(KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONPATH=ROOT)
    ref, out = str(tmp_path / "reference"), str(tmp_path / "run")
    jax_argv = lambda o: [*argv(data_dir, model_yaml, o), "--variants", "baseline",  # noqa: E731
                          "--distribution", "data_parallel"]
    done = subprocess.run([sys.executable, "-m", "zoo.train", *jax_argv(ref)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    killed({"variant": "baseline", "step": 15}, jax_argv(out), str(tmp_path), env=env)
    done = subprocess.run([sys.executable, "-m", "zoo.train", *jax_argv(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "baseline: resumed from epoch 2 step 15 of " in done.stdout
    a, b = weights(out, "baseline"), weights(ref, "baseline")
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert results(out)[0] == results(ref)[0]
    assert results(out)[1]["distribution"] == {"name": "data_parallel", "devices": 2, "processes": 1,
                                               "model_shards": 1}


@pytest.mark.parametrize("reader", ["memory", "stream"])
def test_the_training_batches_resume_at_any_global_step(data_dir, reader):
    """The batches from ``start_step`` on are the uninterrupted sequence's (mid-pass and on a pass boundary)."""
    spec = load_spec(data_dir)
    full, steps, _ = data.training_batches(data_dir, spec, 256, seed=5, reader=reader)
    sequence = [b["user_value"] for b in full.take(2 * steps + 3).as_numpy_iterator()]
    for start in (steps - 2, steps, steps + 3):
        later, _, _ = data.training_batches(data_dir, spec, 256, seed=5, reader=reader, start_step=start)
        got = [b["user_value"] for b in later.take(len(sequence) - start).as_numpy_iterator()]
        assert all(np.array_equal(a, b) for a, b in zip(got, sequence[start:], strict=True)), (reader, start)


def test_the_batches_docstring_example_runs():
    import layer_checks
    from zoo import batches

    layer_checks.check_docstring_examples(batches)
    with pytest.raises(ValueError, match=r"^start_step: must be an int >= 0, got -1$"):
        batches.memory_batches({"x": np.arange(3)}, 2, start_step=-1)

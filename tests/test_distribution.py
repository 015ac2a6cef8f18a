"""zoo.distribution / ``zoo.train --distribution data_parallel``: on 2 virtual CPU devices (a JAX
subprocess with ``--xla_force_host_platform_device_count=2``) the variables are replicated on both,
and training follows the one-device trajectory of the same seed."""

import json
import subprocess
import sys
import textwrap

import keras
import pytest

from helpers import ROOT, clean_env
from zoo.distribution import check_distribution

pytestmark = pytest.mark.tf_only  # the JAX part runs in its own process

SCRIPT = textwrap.dedent("""
    import json, sys, tempfile
    sys.path.insert(0, "tests")
    import keras
    from helpers import UNIFORM, synthetic_rows, tiny_hparams, write_data_dir
    from zoo import train
    from zoo.distribution import distribution_scope
    from zoo.model import build
    from zoo.spec import load_spec

    out = {"devices": len(keras.distribution.list_devices())}
    with distribution_scope("data_parallel"):
        model = build("dcnv2", UNIFORM, **tiny_hparams("dcnv2"))
    out["variable_devices"] = sorted({len(v.value.sharding.device_set) for v in model.weights})
    data = tempfile.mkdtemp()
    write_data_dir(load_spec("configs/datasets/synthetic.yaml"), synthetic_rows(3000, seed=1), data)
    for name in ("none", "data_parallel"):
        summary = train.run(data, "configs/models/dcnv2_test.yaml", tempfile.mkdtemp(), ["baseline"], max_epochs=3,
                            verbose=0, distribution=name)
        run = summary["variants"]["baseline"]
        out[name] = {"distribution": summary["distribution"], "loss": run["training"]["history"]["loss"],
                     "valid": run["training"]["history"]["val_logloss_exact"], "test": run["overall"]["log_loss"]}
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def two_devices():
    env = clean_env(KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_data_parallel_replicates_every_variable_on_both_devices(two_devices):
    assert two_devices["devices"] == 2
    assert two_devices["variable_devices"] == [2]
    assert two_devices["data_parallel"]["distribution"] == {"name": "data_parallel", "devices": 2}
    assert two_devices["none"]["distribution"] == {"name": "none", "devices": 1}


def test_data_parallel_follows_the_one_device_trajectory(two_devices):
    one, two = two_devices["none"], two_devices["data_parallel"]
    # The same global batches, initial weights and dropout masks; only the order of the gradient
    # sums differs (measured: differences of 1e-7).
    assert len(one["loss"]) == len(two["loss"]) == 3
    assert one["loss"] == pytest.approx(two["loss"], abs=1e-5)
    assert one["valid"] == pytest.approx(two["valid"], abs=1e-5)
    assert one["test"] == pytest.approx(two["test"], abs=1e-5)
    assert one["loss"][-1] < one["loss"][0]


def test_docstring_example_runs():
    import layer_checks
    from zoo import distribution

    layer_checks.check_docstring_examples(distribution)


def test_unknown_or_unsupported_distributions_are_named():
    with pytest.raises(ValueError, match=r"^distribution: must be one of \['none', 'data_parallel'\], got 'mirrored'$"):
        check_distribution("mirrored")
    assert keras.backend.backend() == "tensorflow"
    with pytest.raises(ValueError, match=r"^distribution: 'data_parallel' needs KERAS_BACKEND=jax"):
        check_distribution("data_parallel")
    assert check_distribution("none") == "none"

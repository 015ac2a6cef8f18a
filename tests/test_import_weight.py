"""What importing the TF-free parts pulls in, checked in a fresh interpreter: Beam workers and the
spec import neither TensorFlow nor Keras; cohort discovery's maths neither TensorFlow nor matplotlib."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = """
import importlib, json, sys
loaded = {}
for name in sys.argv[1:]:
    importlib.import_module(name)
    loaded[name] = sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "keras", "matplotlib", "layers"})
print(json.dumps(loaded))
"""


def heavy_modules_after_import(*modules):
    """``{module: heavy top-level packages in sys.modules after importing it (cumulatively)}``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", PROBE, *modules], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_spec_beam_jobs_and_cohort_maths_stay_light():
    loaded = heavy_modules_after_import("zoo.spec", "beam_jobs.build_tfrecords", "beam_jobs.cohort_stats",
                                        "beam_jobs.add_aux_labels", "zoo.cohorts")
    assert loaded == {name: [] for name in loaded}

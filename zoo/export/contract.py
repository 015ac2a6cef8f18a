"""The serving contract every export shares: signature names, input/output keys and file names."""

from __future__ import annotations

import os

from zoo.spec import TASK_PREFIX

SIGNATURE = "serving_default"
EXAMPLES_SIGNATURE = "predict_examples"
EXAMPLES_INPUT = "examples"
OUTPUT = "probability"  # the primary task's probability; a multi-task model adds OUTPUT_<label> per other task
SIGNATURES = (SIGNATURE, EXAMPLES_SIGNATURE)
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
SERVING_IMAGE = "tensorflow/serving:2.21.0"
TOLERANCE = 1e-5  # max abs difference between the SavedModel and the Keras model
# A model computing in 16 bits (zoo.precision's mixed policies) rounds its intermediates differently
# in the eager Keras call and in the traced serving graph (other op fusions and accumulation order),
# so its check allows a few units of that precision's rounding error instead (bfloat16: 8 bits of
# mantissa, float16: 11).
TOLERANCE_BY_COMPUTE_DTYPE = {"float32": TOLERANCE, "float16": 2e-3, "bfloat16": 1e-2}


def output_key(model_output: str) -> str:
    """The signature output key of a model output: ``primary`` -> ``probability``, ``task_<l>`` -> ``probability_<l>``."""
    if model_output.startswith(TASK_PREFIX):
        return f"{OUTPUT}_{model_output[len(TASK_PREFIX):]}"
    return OUTPUT


class FeatureError(ValueError):
    """Request features do not match the spec; the message names the feature."""


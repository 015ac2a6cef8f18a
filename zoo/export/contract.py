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


def output_key(model_output: str) -> str:
    """The signature output key of a model output: ``primary`` -> ``probability``, ``task_<l>`` -> ``probability_<l>``."""
    if model_output.startswith(TASK_PREFIX):
        return f"{OUTPUT}_{model_output[len(TASK_PREFIX):]}"
    return OUTPUT


class FeatureError(ValueError):
    """Request features do not match the spec; the message names the feature."""


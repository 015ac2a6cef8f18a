"""The serving contract every export shares: signature names, input/output keys and file names."""

from __future__ import annotations

import os

SIGNATURE = "serving_default"
EXAMPLES_SIGNATURE = "predict_examples"
EXAMPLES_INPUT = "examples"
OUTPUT = "probability"
SIGNATURES = (SIGNATURE, EXAMPLES_SIGNATURE)
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
SERVING_IMAGE = "tensorflow/serving:2.21.0"
TOLERANCE = 1e-5  # max abs difference between the SavedModel and the Keras model


class FeatureError(ValueError):
    """Request features do not match the spec; the message names the feature."""


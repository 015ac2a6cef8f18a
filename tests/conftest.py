"""Test configuration: the Keras backend defaults to TensorFlow; `make test` also runs the tests
marked `multi_backend` under JAX."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "multi_backend: layer/model tests run under TensorFlow and JAX")
    config.addinivalue_line("markers", "tf_only: needs the TensorFlow backend (export, tf.data)")


def pytest_collection_modifyitems(config, items):
    import keras

    if keras.backend.backend() == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"needs the TensorFlow backend; running {keras.backend.backend()}")
    for item in items:
        if "tf_only" in item.keywords:
            item.add_marker(skip)

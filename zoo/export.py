"""SavedModel export for TF Serving.

Writes ``<export_root>/<model_name>/<version>/`` (integer versions; the next free one by default)
with a ``serving_default`` signature taking one named input per spec input feature (batch
dimension None, dtypes and shapes from the spec) and returning ``{"probability": (B, 1)}``. Only
the primary path is exported: a C2AL model's auxiliary heads are not in the served graph.
"""

from __future__ import annotations

import os

import keras

from zoo.model import primary_model
from zoo.spec import FeatureSpec

SIGNATURE = "serving_default"
OUTPUT = "probability"


def next_version(model_dir: str) -> int:
    """1 + the largest integer version directory under ``model_dir`` (1 if none)."""
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(d) for d in os.listdir(model_dir) if d.isdigit()]
    return max(versions, default=0) + 1


def export_saved_model(model: keras.Model, spec: FeatureSpec, export_root: str, model_name: str,
                       version: int | None = None, overwrite: bool = False) -> str:
    """Exports the primary path of ``model`` as a versioned SavedModel; returns its directory.

    Args:
      model: a ranking model or a C2AL-wrapped one.
      spec: the feature spec the model was built from (defines the signature).
      export_root: e.g. ``saved_models``.
      model_name: directory under the root, e.g. ``dcnv2_synthetic``.
      version: integer version; default the next free one.
      overwrite: allow replacing an existing version directory.
    """
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"export needs the TensorFlow backend (KERAS_BACKEND=tensorflow); this process runs "
            f"'{keras.backend.backend()}'. Save the model as .keras and export it from a TF process."
        )
    model_dir = os.path.join(export_root, model_name)
    version = next_version(model_dir) if version is None else int(version)
    path = os.path.join(model_dir, str(version))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True or choose another version")
    serving = primary_model(model)
    archive = keras.export.ExportArchive()
    archive.track(serving)

    def serve(features):
        return {OUTPUT: serving(features, training=False)}

    archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=[spec.serving_signature()])
    archive.write_out(path, verbose=False)
    return path

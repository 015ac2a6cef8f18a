"""SavedModel export for TF Serving, and the serving snippets of the README.

``export_saved_model`` writes ``<export_root>/<model_name>/<version>/`` (integer versions, the next
free one by default; an existing version is replaced only with ``overwrite=True``) holding:

* signature ``serving_default``: one named input per spec input feature (dtype and shape from the
  spec, batch dimension None) -> ``{"probability": float32 (B, 1)}``; a multi-task model (a spec
  with ``labels: [y, y2, ..]``) adds ``"probability_<label>"`` for every task after the primary;
* signature ``predict_examples``: ``examples``, a ``(B,)`` string batch of serialized
  ``tf.train.Example`` records, parsed with ``spec.parse_spec("inputs")`` (the reader's parse spec;
  extra keys such as the label are ignored) -> ``{"probability": float32 (B, 1)}``;
* ``assets.extra/tf_serving_warmup_requests``: TF Serving warm-up records (``PredictionLog`` with a
  ``PredictRequest`` per signature) built from a few evaluation rows.

Only the task paths are served (the primary head, and every task head of a multi-task model; a
C2AL model's auxiliary heads are dropped) and every
:class:`layers.MLETEmbedding` and :class:`layers.DistributedMultiFieldEmbedding` is folded into a plain
table first (:func:`fold_tables`), so the served graph of a C2AL, MLET or distributed-table model is the
baseline graph. The version is written to a temporary sibling
directory (a name TF Serving ignores), checked against the Keras model on the warm-up rows through
both signatures, and renamed into place, so a polling model server never sees a half-written
version. Under the JAX backend the model is saved as ``.keras`` and exported by a TensorFlow
subprocess (``python -m zoo.export``), so served artifacts never depend on the training backend or
device.

Modules (one job each; everything public is re-exported here):

* :mod:`zoo.export.contract`: signature names, input/output keys, the warm-up file, :class:`FeatureError`;
* :mod:`zoo.export.graph`: the served graph (:func:`primary_path`, :func:`task_paths`, :func:`serving_model`,
  :func:`check_model_inputs`, :func:`served_spec`: a routed model's carried cohort feature served);
* :mod:`zoo.export.requests`: request features and warm-up records (:func:`check_features`,
  :func:`serialize_examples`, :func:`predict_request`, :func:`write_warmup_requests`, ...);
* :mod:`zoo.export.savedmodel`: versions and the SavedModel itself (:func:`export_saved_model`);
* :mod:`zoo.export.serving_config`: ``models.config``, docker/REST snippets, :func:`serving_readme`;
* :mod:`zoo.export.cli`: the command line (``python -m zoo.export``).

Command line::

    python -m zoo.export --model runs/synthetic/train/c2al/model.keras --spec runs/synthetic/data \\
        --eval-data runs/synthetic/data --export-root saved_models --model-name dcnv2_synthetic
    python -m zoo.export --serving-readme --spec configs/datasets/synthetic.yaml --model-name dcnv2_synthetic
"""

from zoo.export.cli import main
from zoo.export.contract import (EXAMPLES_INPUT, EXAMPLES_SIGNATURE, OUTPUT, SERVING_IMAGE, SIGNATURE, SIGNATURES,
                                 TOLERANCE, WARMUP_FILE, FeatureError, output_key)
from zoo.export.graph import check_model_inputs, primary_path, served_spec, serving_model, task_paths
from zoo.export.requests import (check_features, example_features, predict_request, serialize_examples,
                                 warmup_features, write_warmup_requests)
from zoo.export.savedmodel import export_saved_model, next_version, signature_outputs, tensorflow_env, version_path
from zoo.export.serving_config import (README_BEGIN, README_END, docker_command, model_config_text, rest_bodies,
                                       serving_readme, write_model_config)
from zoo.folding import fold_tables  # the served graph folds MLET / distributed tables; re-exported for callers of zoo.export

__all__ = [
    "EXAMPLES_INPUT", "EXAMPLES_SIGNATURE", "OUTPUT", "README_BEGIN", "README_END", "SERVING_IMAGE", "SIGNATURE",
    "SIGNATURES", "TOLERANCE", "WARMUP_FILE", "FeatureError",
    "check_features", "check_model_inputs", "docker_command", "example_features", "export_saved_model",
    "fold_tables", "main", "model_config_text", "next_version", "output_key", "predict_request", "primary_path",
    "rest_bodies", "served_spec", "serialize_examples", "serving_model", "serving_readme", "signature_outputs",
    "task_paths", "tensorflow_env", "version_path",
    "warmup_features", "write_model_config", "write_warmup_requests",
]

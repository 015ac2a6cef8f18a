"""TF Serving conventions of the export: saved_model_cli, warm-up records, the model_config / docker /
REST snippets generated from the spec, and the README section that shows them."""

import base64
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from helpers import ROOT, keras_primary  # the session fixture `exported` is in tests/conftest.py

from zoo import export
from zoo.spec import load_spec

pytestmark = pytest.mark.tf_only

README = os.path.join(ROOT, "README.md")
README_SPEC = "configs/datasets/synthetic.yaml"
README_MODEL = "dcnv2_synthetic"


def readme_block() -> str:
    with open(README) as fh:
        text = fh.read()
    start = text.index(export.README_BEGIN)
    return text[start:text.index(export.README_END, start) + len(export.README_END)]


def test_readme_serving_snippets_are_generated_from_the_spec(monkeypatch, capsys):
    spec = load_spec(os.path.join(ROOT, README_SPEC))
    assert readme_block() == export.serving_readme(spec, README_SPEC, README_MODEL)
    # ... and the CLI prints exactly that block.
    monkeypatch.chdir(ROOT)
    assert export.main(["--serving-readme", "--spec", README_SPEC, "--model-name", README_MODEL]) == 0
    assert capsys.readouterr().out.rstrip("\n") == readme_block()


def test_model_config_and_docker_command_point_at_the_export(exported):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    with open(os.path.join(exported["root"], "models.config")) as fh:  # written by --write-model-config
        text = fh.read()
    assert text == export.model_config_text([exported["name"]])
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    (entry,) = config.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == (
        "dcnv2_synthetic", "/models/dcnv2_synthetic", "tensorflow")
    assert entry.model_version_policy.latest.num_versions == 1
    # The command mounts the export root at /models (where base_path points) and reads models.config there;
    # under base_path, TF Serving finds integer version directories only.
    command = export.docker_command("saved_models")
    assert 'source="$PWD/saved_models",target=/models' in command
    assert "--model_config_file=/models/models.config" in command
    assert command.split("\n")[2].strip() == export.SERVING_IMAGE + " \\"
    assert os.listdir(os.path.join(exported["root"], entry.name)) == ["1"]


def decode_rest(body, signature):
    """Input tensors from a REST ``:predict`` body, decoded as TF Serving does (row or columnar form)."""
    _, inputs = signature.structured_input_signature

    def tensor(values, spec):
        if spec.dtype == tf.string:  # binary values travel as {"b64": ...}
            values = [base64.b64decode(v["b64"]) for v in values]
        return tf.constant(values, dtype=spec.dtype)

    if "instances" in body:
        rows = body["instances"]
        for row in rows:
            assert sorted(row) == sorted(inputs)
        return {k: tensor([row[k] for row in rows], s) for k, s in inputs.items()}
    assert sorted(body["inputs"]) == sorted(inputs)
    return {k: tensor(body["inputs"][k], s) for k, s in inputs.items()}


def test_rest_bodies_predict_what_the_keras_model_predicts(exported):
    spec, model = exported["spec"], exported["model"]
    loaded = tf.saved_model.load(exported["path"])
    expected = keras_primary(model, export.example_features(spec, 2))
    bodies = {form: json.loads(text) for form, text in export.rest_bodies(spec).items()}
    assert sorted(bodies) == ["columnar", "examples", "row"]
    for form, body in bodies.items():
        signature = loaded.signatures[body["signature_name"]]
        got = signature(**decode_rest(body, signature))["probability"].numpy().ravel()
        assert got.shape == (2,), form
        assert np.max(np.abs(got - expected)) <= 1e-5, form
    assert bodies["examples"]["signature_name"] == export.EXAMPLES_SIGNATURE


def saved_model_cli_signatures(text):
    """{signature: {"inputs": {name: (dtype, shape)}, "outputs": {...}, "method": ...}} from ``show --all``."""
    text = text.split("Concrete Functions:")[0]
    tensor = re.compile(r"(inputs|outputs)\['([\w/]+)'\] tensor_info:\s+dtype: (\w+)\s+shape: \(([^)]*)\)")
    out = {}
    for block in text.split("signature_def['")[1:]:
        name = block.split("'", 1)[0]
        entry = {"inputs": {}, "outputs": {}, "method": re.search(r"Method name is: *(\S*)", block).group(1)}
        for kind, key, dtype, shape in tensor.findall(block):
            entry[kind][key] = (dtype, shape)
        out[name] = entry
    return out


def test_saved_model_cli_shows_both_signatures(exported):
    code, out, err = exported["saved_model_cli"].result()  # started in the background by the fixture
    assert code == 0, err[-3000:]
    signatures = saved_model_cli_signatures(out)
    assert {export.SIGNATURE, export.EXAMPLES_SIGNATURE} <= set(signatures)
    spec = exported["spec"]
    dtype = {"float32": "DT_FLOAT", "int64": "DT_INT64"}
    assert signatures[export.SIGNATURE]["inputs"] == {
        f.name: (dtype[spec.input_dtype(f)], ", ".join(["-1", *map(str, spec.input_shape(f))])) for f in spec.inputs}
    assert signatures[export.EXAMPLES_SIGNATURE]["inputs"] == {"examples": ("DT_STRING", "-1")}
    for name in export.SIGNATURES:
        assert signatures[name]["outputs"] == {"probability": ("DT_FLOAT", "-1, 1")}
        assert signatures[name]["method"] == "tensorflow/serving/predict"


def test_warmup_file_holds_prediction_logs_of_real_evaluation_rows(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    spec = exported["spec"]
    path = os.path.join(exported["path"], "assets.extra", "tf_serving_warmup_requests")
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log"] * 4
    requests = [log.predict_log.request for log in logs]
    assert [(r.model_spec.name, r.model_spec.signature_name) for r in requests] == [
        (exported["name"], s) for s in (export.SIGNATURE, export.SIGNATURE,
                                        export.EXAMPLES_SIGNATURE, export.EXAMPLES_SIGNATURE)]
    for request, rows in zip(requests[:2], (5, 1)):
        assert sorted(request.inputs) == sorted(f.name for f in spec.inputs)
        for f in spec.inputs:  # the first rows of the evaluation split, as the reader parses them
            np.testing.assert_array_equal(tf.make_ndarray(request.inputs[f.name]), exported["features"][f.name][:rows])
    for request, rows in zip(requests[2:], (5, 1)):
        assert list(request.inputs) == ["examples"]
        parsed = tf.io.parse_example(tf.make_ndarray(request.inputs["examples"]), spec.parse_spec("inputs"))
        for f in spec.inputs:
            np.testing.assert_array_equal(parsed[f.name].numpy(), exported["features"][f.name][:rows])

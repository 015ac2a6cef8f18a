"""Times one fused embedding table (layers.MultiFieldEmbedding) against one keras.layers.Embedding
per field, forward + backward, under the TensorFlow and JAX backends.

    python bench/fused_embedding.py [--batch 8192] [--steps 20] [--warmup 3] [--dim 16]

Setup: 26 categorical fields (Criteo-like; ``VOCAB_SIZES`` below, 10 to 200,000 ids, about 1.48M
rows in all, so each variant holds ~95 MB of float32 tables), embedding dim 16, one id per field
per example, ids uniform in ``[0, V_f)`` (seed 0, one fixed batch resident in memory). Both
variants have the same rows: the fused table has ``V_f + 1`` rows per field (its OOV row) and each
per-field table ``V_f + 1`` too. A step is the forward pass (the 26 ``(B, 1, 16)`` lookups,
concatenated to ``(B, 26, 16)``), the scalar loss ``mean(e**2)`` and its gradient with respect to
every table:

* TensorFlow: ``tf.function`` of a ``GradientTape`` step (no XLA); the gradients are
  ``IndexedSlices`` (only the looked-up rows);
* JAX: ``jax.jit(jax.value_and_grad(...))`` of the model's ``stateless_call``; the gradients are
  dense arrays of the tables' full shapes.

So compare the variants within a backend, not the backends with each other. The fused layer
also maps ids to rows (OOV / offset arithmetic) that the plain per-field lookups skip, and returns
one tensor per field (its one gather is split 26 ways, then concatenated back here). A third,
diagnostic variant ``fused_unsplit`` is the same layer with the same row mapping and gather but
returning the ``(B, 26, 16)`` gather result directly, to show what the split/concat round trip costs.

Each backend runs in its own subprocess (the Keras backend is fixed per process). Steps of the
variants are interleaved after warm-up, so background load hits them alike; the median ms/step is
reported. Prints a table and writes bench/results/fused_embedding.json with the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Criteo-like cardinalities of the 26 categorical fields, capped at 200,000 ids (six fields hit the
# cap) with a floor of 10, so that both variants fit comfortably in memory on a small machine.
VOCAB_SIZES = [1460, 583, 200_000, 200_000, 305, 24, 12_517, 633, 10, 93_145, 5683, 200_000, 3194,
               27, 14_992, 200_000, 10, 5652, 2173, 10, 200_000, 18, 15, 200_000, 105, 142_572]
BACKENDS = ("tensorflow", "jax")
VARIANTS = ("fused", "per_field", "fused_unsplit")


def unsplit_fused_layer(vocab_sizes, dim):
    """MultiFieldEmbedding whose call skips the final per-field split (diagnostic variant only)."""
    from keras import ops

    from layers.embeddings import MultiFieldEmbedding

    class FusedUnsplit(MultiFieldEmbedding):
        def call(self, inputs):  # MultiFieldEmbedding.call without the last ops.split
            ids = ops.concatenate([ops.cast(x, "int64") for x in inputs], axis=1)
            size = ops.convert_to_tensor(self._col_size, "int64")
            in_vocab = ops.where((ids >= 0) & (ids < size), ids, size)
            rows = ops.where(ops.convert_to_tensor(self._col_hash), ops.mod(ids, size), in_vocab)
            rows = rows + ops.convert_to_tensor(self._col_offset, "int64")
            return ops.cast(ops.take(self.embeddings, rows, axis=0), self.compute_dtype)

        def compute_output_shape(self, input_shape):
            return (input_shape[0][0], sum(s[-1] for s in input_shape), self.output_dim)

    return FusedUnsplit(vocab_sizes, dim, name="fused_unsplit")


def build_model(variant: str, dim: int):
    """Functional model: 26 ``(B, 1)`` id inputs -> ``(B, 26, dim)`` embeddings."""
    import keras

    from layers.embeddings import MultiFieldEmbedding

    inputs = [keras.Input((1,), dtype="int32", name=f"c{i}") for i in range(len(VOCAB_SIZES))]
    if variant == "fused":
        outs = MultiFieldEmbedding(VOCAB_SIZES, dim, name="fused")(inputs)
    elif variant == "fused_unsplit":
        return keras.Model(inputs, unsplit_fused_layer(VOCAB_SIZES, dim)(inputs), name=variant)
    else:
        outs = [keras.layers.Embedding(v + 1, dim, name=f"emb_{i}")(x)
                for i, (v, x) in enumerate(zip(VOCAB_SIZES, inputs))]
    return keras.Model(inputs, keras.layers.Concatenate(axis=1)(outs), name=variant)


def make_step(model):
    """A compiled forward + backward step ``ids -> loss`` (gradients computed and returned)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        variables = model.trainable_variables

        @tf.function
        def step(ids):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(model(ids)))
            return loss, tape.gradient(loss, variables)

        def run(ids):
            loss, grads = step(ids)
            loss.numpy()  # waits for the step
            return grads

        return run

    import jax

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss_fn(trainable_values, ids):
        out, _ = model.stateless_call(trainable_values, non_trainable, ids)
        return jax.numpy.mean(jax.numpy.square(out))

    grad_step = jax.jit(jax.value_and_grad(loss_fn))

    def run(ids):
        loss, grads = grad_step(trainable, ids)
        jax.block_until_ready((loss, grads))
        return grads

    return run


def worker(args) -> dict:
    """Runs in a subprocess with KERAS_BACKEND set: times both variants, returns the results."""
    import keras
    import numpy as np

    backend = keras.backend.backend()
    rng = np.random.default_rng(0)
    ids_np = [rng.integers(0, v, size=(args.batch, 1), dtype="int32") for v in VOCAB_SIZES]
    ids = [keras.ops.convert_to_tensor(x) for x in ids_np]
    steps, params = {}, {}
    for variant in VARIANTS:
        model = build_model(variant, args.dim)
        params[variant] = model.count_params()
        steps[variant] = make_step(model)
    compile_s = {}
    for variant in VARIANTS:
        start = time.perf_counter()
        steps[variant](ids)  # trace / compile
        compile_s[variant] = time.perf_counter() - start
        for _ in range(args.warmup):
            steps[variant](ids)
    times = {v: [] for v in VARIANTS}
    for _ in range(args.steps):
        for variant in VARIANTS:
            start = time.perf_counter()
            steps[variant](ids)
            times[variant].append((time.perf_counter() - start) * 1e3)
    medians = {v: statistics.median(times[v]) for v in VARIANTS}
    return {
        "backend": backend,
        "params": params,
        "first_step_seconds": {v: round(s, 2) for v, s in compile_s.items()},
        "ms_per_step": {v: round(medians[v], 2) for v in VARIANTS},
        "step_ms": {v: [round(t, 2) for t in times[v]] for v in VARIANTS},
        "per_field_over_fused": round(medians["per_field"] / medians["fused"], 3),
        "per_field_over_fused_unsplit": round(medians["per_field"] / medians["fused_unsplit"], 3),
    }


def versions() -> dict:
    import jax
    import keras
    import numpy as np
    import tensorflow as tf

    return {"python": platform.python_version(), "keras": keras.__version__, "tensorflow": tf.__version__,
            "jax": jax.__version__, "numpy": np.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results", "fused_embedding.json"))
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args)))
        return

    load_before = os.getloadavg()
    results = []
    for backend in args.backends:
        print(f"{backend}: timing {args.steps} interleaved steps per variant ...", flush=True)
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--worker", "--batch", str(args.batch), "--dim",
             str(args.dim), "--steps", str(args.steps), "--warmup", str(args.warmup)],
            check=True, cwd=ROOT, capture_output=True, text=True,
            env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"})
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    print(f"\n{'backend':<11} {'fused ms/step':>14} {'per-field ms/step':>18} {'per-field / fused':>18}"
          f" {'fused_unsplit ms/step':>22} {'per-field / unsplit':>20}")
    for r in results:
        ms = r["ms_per_step"]
        print(f"{r['backend']:<11} {ms['fused']:>14.1f} {ms['per_field']:>18.1f} {r['per_field_over_fused']:>18.2f}"
              f" {ms['fused_unsplit']:>22.1f} {r['per_field_over_fused_unsplit']:>20.2f}")
    result = {
        "benchmark": "fused_embedding",
        "setup": {
            "fields": len(VOCAB_SIZES), "vocab_sizes": VOCAB_SIZES,
            "rows_per_variant": sum(VOCAB_SIZES) + len(VOCAB_SIZES), "embedding_dim": args.dim, "batch": args.batch,
            "ids": "uniform in [0, V_f), seed 0, one fixed batch",
            "step": "forward (26 lookups, concatenated to (B, 26, d)) + mean(e**2) + gradient w.r.t. every table",
            "variants": {"fused": "layers.MultiFieldEmbedding (one gather, split into 26 outputs)",
                         "per_field": "26 keras.layers.Embedding(V_f + 1, d)",
                         "fused_unsplit": "diagnostic: MultiFieldEmbedding's mapping + gather, no split"},
            "tensorflow": "tf.function + GradientTape, no XLA; IndexedSlices gradients",
            "jax": "jax.jit(jax.value_and_grad(stateless_call)); dense gradients",
            "warmup_steps": args.warmup, "timed_steps": args.steps,
            "statistic": "median ms/step, variants interleaved step by step"},
        "results": results,
        "environment": {**versions(), "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
                        "machine": platform.machine(), "date": time.strftime("%Y-%m-%d"),
                        "load_average_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
                        "note": "shared 2-core machine: other people's test runs were active during the "
                                "measurement (see load_average), so absolute times are noisy; interleaving the "
                                "variants keeps the ratios steadier, but they still move between runs, so "
                                "read the direction, not the second decimal"},
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as fh:
        json.dump(result, fh, indent=2)
    print(f"\nrecorded in {args.output}")


if __name__ == "__main__":
    main()

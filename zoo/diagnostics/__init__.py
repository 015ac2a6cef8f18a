"""C2AL training diagnostics: attention density, dead over-arch units, embedding collapse and gradient alignment (docs/methods.md#attention-fm, #diagnostics, #information-abundance, #gradient-alignment).

The C2AL paper shows its mechanism (the FM attention weights ``Y`` of ``G = E E^T Y`` collapse into a
sparse, light-tailed distribution under the single-task objective, and C2AL's auxiliary heads widen them)
with histograms only. This module turns it into numbers logged during training:

1. **Statistics** (pure NumPy, backend-free), each documented with its formula:
   :func:`near_zero_fraction`, :func:`normalized_entropy`, :func:`excess_kurtosis` and
   :func:`participation_ratio` of an attention matrix ``Y``; :func:`dead_relu_fraction` of a batch of
   ReLU activations; :func:`information_abundance` of an embedding table.
2. :func:`collect` runs one inference forward pass of a model's backbone on a probe batch and gathers

   * per :class:`layers.AttentionFM` layer (DHEN, Wukong, any backbone using it): the four ``Y``
     statistics and the ``|Y|`` values (for histograms). Static mode: ``Y`` is the layer's
     ``attention_matrix`` (after the configured normalization, i.e. exactly what the layer multiplies
     with; with ``normalize=None`` the weight itself). Dynamic mode: ``Y`` is ``(B, n, k)`` per example,
     computed on the probe batch from the embeddings that actually reach the layer; each statistic is
     computed **per example** on that example's ``(n, k)`` matrix and then **averaged over the probe
     batch** (the ``|Y|`` values of every example are kept for the histograms);
   * the dead-ReLU fraction of the **over-arch**: every ReLU :class:`layers.MLP` that the backbone's
     ``over_arch(z)`` hook runs (see :func:`collect` for what that is per backbone);
   * the information abundance of every embedding table (every spec table's row block of the fused
     lookup tables; per set for multi-embedding; the folded ``A_f B_f`` table for MLET).

   :func:`flatten_stats` turns that into ``{"attention/<layer>/<stat>": float, ...}`` scalars.
3. :func:`gradient_alignment`: on a probe batch with its labels, the cosine between the primary
   loss's gradient and each (lambda-weighted) auxiliary loss's gradient with respect to the tapped
   representation (``h`` or ``z``), its decomposition into the part parallel to the primary gradient
   and the orthogonal rest, over all rows and per cohort; exact NumPy closed form for the default
   ``Dense(1)`` heads on ``h``, backend autodiff (TF ``GradientTape``, ``jax.vjp``) otherwise.
   :func:`flatten_gradients` gives ``{"gradients/<aux>/<stat>": float, ...}``.
4. :class:`C2ALDiagnostics`, a ``keras.callbacks.Callback`` that calls :func:`collect` (and, given
   the probe's labels, :func:`gradient_alignment`) at train begin, every ``every_n_steps`` optimizer
   steps and at train end, keeps every record in ``history`` and writes it as it goes to TensorBoard
   (scalars, plus histograms of ``|Y|``) and/or a JSON-lines file.
5. Plots (matplotlib, Agg, no pyplot state): :func:`plot_ne_diff` (per-cohort NE_diff bars with error
   bars) and :func:`plot_attention_histograms` (``|Y|`` histograms, baseline against C2AL, at several
   points of training). :func:`load_records` reads a JSON-lines file back.

Everything runs on the TensorFlow and JAX backends: model values are taken with
``keras.ops.convert_to_numpy`` and every statistic is NumPy (float64).

Modules: :mod:`zoo.diagnostics.statistics` (1, NumPy), :mod:`zoo.diagnostics.collection` (2),
:mod:`zoo.diagnostics.gradients` (3), :mod:`zoo.diagnostics.callback` (4) and
:mod:`zoo.diagnostics.plots` (5); every public name is
re-exported here. How the forward pass is observed: see :mod:`zoo.diagnostics.collection`.
"""

from zoo.diagnostics.callback import C2ALDiagnostics, load_records
from zoo.diagnostics.collection import collect, embedding_tables, find_backbone, flatten_stats
from zoo.diagnostics.gradients import (GRADIENT_STATS, alignment_stats, flatten_gradients, gradient_alignment,
                                       representation_gradients)
from zoo.diagnostics.plots import plot_attention_histograms, plot_ne_diff
from zoo.diagnostics.statistics import (Y_STATS, attention_stats, dead_relu_fraction, excess_kurtosis,
                                        information_abundance, near_zero_fraction, normalized_entropy,
                                        participation_ratio)

__all__ = [
    "Y_STATS",
    "near_zero_fraction", "normalized_entropy", "excess_kurtosis", "participation_ratio",
    "dead_relu_fraction", "information_abundance", "attention_stats", "find_backbone", "embedding_tables",
    "collect", "flatten_stats",
    "GRADIENT_STATS", "alignment_stats", "representation_gradients", "gradient_alignment", "flatten_gradients",
    "C2ALDiagnostics", "load_records", "plot_ne_diff", "plot_attention_histograms",
]

"""The variants the C2AL study compares with the baseline, by name.

Each is a C2AL training model (:func:`zoo.c2al.build_c2al`) with one ablation of the model YAML's
``c2al.ablation`` and a cohort pair chosen from the seed-0 baseline's discovery result
(:func:`zoo.cohorts.choose_pair`): ``most`` (C2AL's own pair), ``least`` or ``random``. Every C2AL
variant serves the baseline graph, so the comparison is of training objectives only.

``crocodile`` is no C2AL variant: the baseline's primary-only model with the Crocodile embedding
options (:func:`zoo.crocodile.study_embedding`: multi-embedding with the cross-expert covariance loss
and, where the spec has a prior id input, the prior-informed gate). It serves its own, larger graph
(the M sets and the gate); its ``lambda`` in the run key is unused. Its initial weights differ from
the baseline's (other embedding tables and experts), but its seed pairing is the same: built right
after ``keras.utils.set_random_seed(seed)``, the data order and dropout reset to the seed before
``fit``.

The served-tower methods (``method`` set: :mod:`zoo.cohort_heads`, :mod:`zoo.gradient_aggregation`,
:mod:`zoo.d_train`) are different: their per-group towers on the pair's axis are the served model.
They take the model YAML's ``cohort_heads`` block (groups, head units, prior) with ``axis`` defaulting to
the pair's, ignore the lambda, and keep the seed pairing (the backbone is built first). A variant's
``cohort_heads`` entries override that block: ``gradient_aggregation_uniform`` is Gradient Aggregation
with ``prior: uniform`` instead of the YAML's (default ``user_share``).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Variant:
    """A C2AL variant: the ``zoo.c2al`` ablation and the discovery strategy of its cohort pair."""

    ablation: str = "none"
    pair: str = "most"
    description: str = ""
    backbones: tuple[str, ...] | None = None  # None: every backbone
    heads: bool = True  # False: no auxiliary heads (the baseline's model and targets)
    embedding: str | None = None  # a key of zoo.study.runs.EMBEDDINGS: the run's embedding options
    method: str | None = None  # a zoo.cohort_heads method: served per-group towers instead of C2AL heads
    cohort_heads: tuple[tuple[str, str], ...] = ()  # entries over the model YAML's cohort_heads block

    def applies_to(self, backbone: str) -> bool:
        return self.backbones is None or backbone in self.backbones


C2AL = "c2al"
BASELINE = "baseline"
VARIANTS: dict[str, Variant] = {
    C2AL: Variant(description="C2AL as published: two Dense heads, labels y 1[x in C]"),
    "reweight": Variant("reweight", description="no heads; primary BCE weighted 1 + (lambda / pi_C) 1[x in C]"),
    "membership": Variant("membership", description="both heads, labels 1[x in C]"),
    "single_head": Variant("single_head", description="the head cohort's auxiliary head only"),
    "single_tail": Variant("single_tail", description="the tail cohort's auxiliary head only"),
    "ple_towers": Variant("ple_towers", description="auxiliary tasks as PLE/MMoE towers 1 and 2",
                          backbones=("ple", "mmoe")),
    "random_pair": Variant(pair="random", description="C2AL on a random eligible cohort pair"),
    "least_pair": Variant(pair="least", description="C2AL on the least-divergent cohort pair"),
    "crocodile": Variant(heads=False, embedding="crocodile",
                         description="no heads; Crocodile multi-embedding (covariance loss, prior gate)"),
    "cohort_heads": Variant(method="cohort_heads", description="one served tower per cohort group, routed"),
    "gradient_aggregation": Variant(method="gradient_aggregation",
                                    description="PIN-style: backdoor-adjusted group-balanced loss, served plug-ins "
                                                "(our interpretation)"),
    "gradient_aggregation_uniform": Variant(method="gradient_aggregation", cohort_heads=(("prior", "uniform"),),
                                            description="Gradient Aggregation with the uniform prior P(z) = 1 / groups"),
    "d_train": Variant(method="d_train", description="D-Train: pre-train, split heads, fine-tune on a frozen backbone"),
}

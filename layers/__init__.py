"""Reusable Keras 3 layers for CTR models (backend-agnostic: ``keras.ops`` only).

Grouped by role: ``embeddings`` (lookups), ``interactions`` (feature-interaction operators),
``attention`` (field self-attention, target attention), ``experts`` (gated experts), ``disentangle``
(Crocodile's cross-expert covariance and prior-informed gate), ``routing`` (per-example routing to
cohort towers) and ``blocks`` (generic building blocks, FinalMLP's feature gate). Importing this
package registers every layer for ``.keras`` deserialization (package ``ctr_zoo``). DCNv2's cross layer and DLRM's dot interaction
come from keras-rs (``keras_rs.layers.FeatureCross``, ``keras_rs.layers.DotInteraction``).
"""

from layers.attention import FieldSelfAttention, TargetAttention
from layers.blocks import MLP, FeatureGate
from layers.disentangle import CrossExpertCovariance, PriorElementwiseGate
from layers.distributed_embedding import DistributedMultiFieldEmbedding
from layers.embeddings import DualEmbedding, MLETEmbedding, MultiEmbedding, MultiFieldEmbedding
from layers.experts import PLE, CGCLevel, MMoE
from layers.fusion import BilinearFusion
from layers.interactions import AFM, FM, AttentionFM, LinearCompression, LowRankMixtureCross
from layers.routing import CohortBucketizer, CohortRouter

__all__ = [
    "AFM", "AttentionFM", "BilinearFusion", "CGCLevel", "CohortBucketizer", "CohortRouter", "CrossExpertCovariance",
    "DistributedMultiFieldEmbedding", "DualEmbedding", "FM", "FeatureGate", "FieldSelfAttention", "LinearCompression", "LowRankMixtureCross",
    "MLETEmbedding", "MLP", "MMoE", "MultiEmbedding", "MultiFieldEmbedding", "PLE", "PriorElementwiseGate",
    "TargetAttention",
]

"""Reusable Keras 3 layers for CTR models (backend-agnostic: ``keras.ops`` only).

Grouped by role: ``embeddings`` (lookups), ``blocks`` (generic building blocks). Importing this
package registers every layer for ``.keras`` deserialization (package ``ctr_zoo``).
"""

from layers.blocks import MLP
from layers.embeddings import DualEmbedding, MLETEmbedding, MultiEmbedding, MultiFieldEmbedding

__all__ = ["DualEmbedding", "MLETEmbedding", "MLP", "MultiEmbedding", "MultiFieldEmbedding"]

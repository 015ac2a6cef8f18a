"""The divergence heatmap of a discovery result (matplotlib, Agg)."""

from __future__ import annotations

import numpy as np


def plot_divergence_heatmap(result, path: str) -> str:
    """Heatmap of ``result``'s matrix, values annotated, the chosen pair outlined; excluded cohorts marked ``*``.

    Args:
      result: a :class:`zoo.cohorts.result.DiscoveryResult`.
      path: the image file to write.

    Returns:
      ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    m = result.matrix_array()
    n = len(result.cohorts)
    size = max(4.0, 0.75 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(np.ma.masked_invalid(m), cmap="viridis")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=f"{result.metric} divergence")
    finite = m[np.isfinite(m)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(n):
        for j in range(n):
            text = "n/a" if not np.isfinite(m[i, j]) else f"{m[i, j]:.3g}"
            color = "black" if np.isfinite(m[i, j]) and m[i, j] > mid else "white"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color if np.isfinite(m[i, j]) else "grey")
    labels = [c + (" *" if c in result.excluded else "") for c in result.cohorts]
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    h, t = result.index(result.head), result.index(result.tail)
    for r, c in ((h, t), (t, h)):
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
    title = f"{result.metric} divergence of predicted-probability histograms\naxis '{result.axis}' ({result.mode}, " \
            f"split {result.split}): head {result.head}, tail {result.tail}"
    if result.excluded:
        title += f"\n* excluded (< {result.min_fraction:g} of rows)"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


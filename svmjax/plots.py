"""Figures for training runs: learning curves and learned weight templates.

matplotlib is an optional extra (``pip install 'svmjax[plot]'``); it is imported lazily,
with the Agg backend, so nothing here needs a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["plot_heatmap", "plot_history", "plot_templates"]


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'svmjax[plot]'") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str | Path) -> Path:
    """Lay out, write as PNG (creating the folder) and close the figure."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_history(history: Mapping[str, np.ndarray], path: str | Path, *, title: str = "") -> Path:
    """Save the objective and accuracy curves of a training history as a PNG.

    Args:
      history: per-epoch arrays with keys ``"objective"``, ``"train_accuracy"`` and
        optionally ``"val_accuracy"`` (as returned by :func:`svmjax.train.fit`).
      path: the PNG file to write (its folder is created).
      title: an optional figure title.

    Returns:
      The path written.
    """
    plt = _pyplot()
    epochs = np.arange(1, len(history["objective"]) + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.plot(epochs, history["objective"], color="tab:red")
    left.set(xlabel="epoch", ylabel="objective", title="training objective")
    right.plot(epochs, history["train_accuracy"], label="train")
    if "val_accuracy" in history:
        right.plot(epochs, history["val_accuracy"], label="validation")
    right.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    right.legend()
    if title:
        fig.suptitle(title)
    return _save(plt, fig, path)


def plot_templates(
    W: ArrayLike,
    image_shape: Sequence[int],
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Save each class's weight column ``W[:, c]`` drawn as an image (cs231n's templates).

    Args:
      W: ``[D, C]`` weights with ``D == prod(image_shape)``.
      image_shape: ``(H, W)`` for grey images or ``(H, W, 3)`` for colour (channels last).
      path: the PNG file to write (its folder is created).
      class_names: one title per class (default: the class index).

    Each template is rescaled to ``[0, 1]`` on its own, as in the cs231n notes.

    Returns:
      The path written.
    """
    W = np.asarray(W, np.float32)
    if W.ndim != 2 or W.shape[0] != int(np.prod(image_shape)):
        raise ValueError(f"W of shape {W.shape} does not hold images of shape {tuple(image_shape)}")
    n_classes = W.shape[1]
    names = [str(c) for c in range(n_classes)] if class_names is None else list(class_names)
    plt = _pyplot()
    fig, _ = plt.subplots(1, n_classes, figsize=(1.3 * n_classes, 1.6))
    for c, ax in enumerate(fig.axes):
        image = W[:, c].reshape(image_shape)
        image = (image - image.min()) / max(float(np.ptp(image)), 1e-12)
        ax.imshow(image, cmap="gray" if len(image_shape) == 2 else None)
        ax.set_title(names[c], fontsize=8)
        ax.axis("off")
    return _save(plt, fig, path)


def plot_heatmap(
    values: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | Path,
    *,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
) -> Path:
    """Save a ``[rows, cols]`` grid of numbers (e.g. validation accuracy) as an annotated heatmap.

    NaN cells (e.g. a diverged configuration) are drawn blank.

    Returns:
      The path written.
    """
    values = np.asarray(values, np.float64)
    if values.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"values of shape {values.shape} do not match {len(row_labels)} row and "
            f"{len(col_labels)} column labels"
        )
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.1 * len(col_labels) + 2.5, 0.6 * len(row_labels) + 1.8))
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(col_labels)), col_labels)
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    low, high = np.nanmin(values), np.nanmax(values)
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            bright = (value - low) > 0.6 * (high - low)  # dark text on the light end of viridis
            color = "k" if bright else "w"
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", color=color, fontsize=8)
    fig.colorbar(image, ax=ax)
    return _save(plt, fig, path)

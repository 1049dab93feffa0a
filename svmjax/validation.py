"""Input checks shared by every svmjax entry point.

Two kinds of check live here:

* :func:`validate` looks at *values* (label range, finiteness). It needs concrete
  arrays, so it runs only at eager entry points, never inside ``jit``.
* :func:`check_loss_inputs` looks at *shapes and dtypes*, which are static, so it runs at
  trace time inside ``jit`` too. :func:`poison_invalid_labels` is the in-``jit`` fallback
  for label values: JAX clamps out-of-range indices instead of raising, so a bad label
  would otherwise give a finite, plausible loss. We turn that example's scores into NaN
  instead, so its loss and its gradient are NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = ["validate", "is_concrete", "check_loss_inputs", "poison_invalid_labels", "one_hot"]


def is_concrete(*xs: object) -> bool:
    """True when none of ``xs`` is a JAX tracer (so their values can be inspected)."""
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def _first_index(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _position(index: tuple[int, ...]) -> str:
    return str(index[0]) if len(index) == 1 else str(index)


def validate(
    scores_or_X: ArrayLike,
    labels: ArrayLike,
    n_classes: int | None = None,
    *,
    name: str = "scores",
) -> tuple[jax.Array, jax.Array]:
    """Check a batch eagerly and return it as JAX arrays; raise a clear error otherwise.

    Args:
      scores_or_X: float array ``[..., C]`` of scores, or ``[N, D]`` features (then pass
        ``n_classes`` and ``name="X"``).
      labels: integer class indices ``[...]`` in ``[0, C)``, one per row of
        ``scores_or_X`` (``labels.shape == scores_or_X.shape[:-1]``).
      n_classes: number of classes ``C``; defaults to ``scores_or_X.shape[-1]``.
      name: what to call the first argument in error messages.

    Returns:
      ``(jnp.asarray(scores_or_X), jnp.asarray(labels))``.

    Raises:
      TypeError: ``labels`` are not integers, or ``scores_or_X`` is not floating point.
      ValueError: naming the problem — empty input, fewer than 2 classes, mismatched
        shapes (both shapes named), a non-finite entry (its index named), or the first
        label outside ``[0, C)`` (its value and position named).

    Example:
      >>> import jax.numpy as jnp
      >>> validate(jnp.zeros((2, 3)), jnp.array([0, 5]))
      Traceback (most recent call last):
        ...
      ValueError: label 5 at position 1 is outside [0, 3) ...

    This runs on concrete values only; inside ``jit`` the losses fall back to
    :func:`poison_invalid_labels`, which turns an out-of-range label into a NaN loss.
    """
    x = np.asarray(scores_or_X)
    y = np.asarray(labels)
    if not np.issubdtype(x.dtype, np.floating) and x.dtype != jnp.bfloat16:
        raise TypeError(f"{name} must be floating point, got dtype {x.dtype}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(
            f"labels must be integer class indices in [0, C), got dtype {y.dtype}"
            + (" (convert with labels.astype(int))" if np.issubdtype(y.dtype, np.floating) else "")
        )
    if x.ndim < 1:
        raise ValueError(f"{name} must have at least 1 dimension [..., C], got a scalar")
    if y.shape != x.shape[:-1]:
        raise ValueError(
            f"labels shape {y.shape} does not match {name} shape {x.shape}: "
            f"expected labels of shape {x.shape[:-1]}"
        )
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {x.shape})")
    n_classes = x.shape[-1] if n_classes is None else int(n_classes)
    if n_classes < 2:
        raise ValueError(f"need at least 2 classes, got {n_classes}")
    finite = np.isfinite(x.astype(np.float32) if x.dtype == jnp.bfloat16 else x)
    if not finite.all():
        index = _first_index(~finite)
        raise ValueError(f"{name} is not finite: {name}[{_position(index)}] = {x[index]}")
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        index = _first_index(bad)
        raise ValueError(
            f"label {y[index]} at position {_position(index)} is outside [0, {n_classes}) "
            f"({int(bad.sum())} bad label(s) in all)"
        )
    return jnp.asarray(x), jnp.asarray(y)


def check_loss_inputs(
    scores: ArrayLike,
    labels: ArrayLike,
    margin: ArrayLike,
    class_weights: ArrayLike | None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array | None]:
    """Trace-time checks of a loss call; returns the inputs as arrays.

    Dtypes and shapes are checked always (they are static). Label and class-weight
    *values* (labels in ``[0, C)``; weights finite and ``>= 0``) are checked only when they
    are concrete (eager calls); inside ``jit`` see :func:`poison_invalid_labels`. The
    margin is not checked: any finite margin defines a valid loss (``margin=0`` is the
    multiclass perceptron criterion), and the training entry points, which need a positive
    one, check it there. Non-finite scores are not checked either: they propagate (a NaN
    score gives a NaN loss), as in any ``jnp`` function; :func:`validate` rejects them.
    """
    scores = jnp.asarray(scores)
    labels_in = labels
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(scores.dtype, jnp.floating):
        raise TypeError(f"scores must be floating point, got dtype {scores.dtype}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integer class indices in [0, C), got dtype {labels.dtype}")
    if scores.ndim < 1 or labels.shape != scores.shape[:-1]:
        raise ValueError(
            f"labels shape {labels.shape} does not match scores shape {scores.shape}: "
            f"expected labels of shape {scores.shape[:-1]}"
        )
    n_classes = scores.shape[-1]
    if n_classes < 2:
        raise ValueError(f"need at least 2 classes, got scores with {n_classes} column(s)")
    margin = jnp.asarray(margin, dtype=scores.dtype)
    if margin.ndim != 0:
        raise ValueError(f"margin must be a scalar, got shape {margin.shape}")
    if class_weights is not None:
        class_weights = jnp.asarray(class_weights, dtype=scores.dtype)
        if class_weights.shape != (n_classes,):
            raise ValueError(
                f"class_weights must have shape ({n_classes},) (one weight per class), "
                f"got shape {class_weights.shape}"
            )
        if is_concrete(class_weights):  # a negative weight rewards violating the margin
            w = np.asarray(class_weights)
            bad = np.flatnonzero(~(np.isfinite(w) & (w >= 0)))
            if bad.size:
                raise ValueError(
                    f"class_weights must be finite and >= 0, got class_weights[{bad[0]}] = "
                    f"{w[bad[0]]}"
                )
    if is_concrete(labels_in) and labels.size:
        y = np.asarray(labels)
        bad = (y < 0) | (y >= n_classes)
        if bad.any():
            index = _first_index(bad)
            raise ValueError(
                f"label {y[index]} at position {_position(index)} is outside [0, {n_classes})"
            )
    return scores, labels, margin, class_weights


def poison_invalid_labels(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """Return ``scores`` with every example whose label is outside ``[0, C)`` set to NaN.

    Multiplying (rather than selecting) makes the NaN flow into the gradient as well:
    a bad label gives a NaN loss *and* a NaN gradient for that example, never a finite,
    plausible number. Valid examples are multiplied by exactly 1.
    """
    valid = (labels >= 0) & (labels < scores.shape[-1])
    factor = jnp.where(valid, jnp.ones((), scores.dtype), jnp.full((), jnp.nan, scores.dtype))
    return scores * factor[..., None]


def one_hot(labels: jax.Array, n_classes: int) -> jax.Array:
    """Boolean mask ``[..., C]``, True at each example's label (all False when out of range)."""
    return jax.nn.one_hot(labels, n_classes, dtype=jnp.bool_)

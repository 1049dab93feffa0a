"""Checking a batch before use: :func:`validate`.

:func:`validate` looks at the *values* of a batch (label range, finite entries, shapes,
dtypes) and raises an error that names the first problem. It needs concrete arrays, so it
runs at eager entry points (``fit``, ``fit_grid``, ``solve``, the estimator), never inside
``jit``. Inside ``jit`` the losses check shapes and dtypes at trace time and turn an
out-of-range label or a negative class weight into a NaN loss and gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from svmjax._checks import check_dtypes, check_labels, first_index, position

__all__ = ["validate"]


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
      ``(scores_or_X, labels)`` as JAX arrays (as given if they are already; otherwise on
      the default device, in JAX's default dtypes, as ``jnp.asarray`` would give them).

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

    This runs on concrete values only; inside ``jit`` the losses turn an out-of-range label
    into a NaN loss instead.
    """
    x = np.asarray(scores_or_X)
    y = np.asarray(labels)
    check_dtypes(x, y, name)
    if x.ndim < 1:
        raise ValueError(f"{name} needs a class axis [..., C], got a 0-d array (a scalar)")
    if y.shape != x.shape[:-1]:
        raise ValueError(
            f"labels shape {y.shape} does not match {name} shape {x.shape}: "
            f"expected labels of shape {x.shape[:-1]}"
        )
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {x.shape})")
    classes = x.shape[-1] if n_classes is None else int(n_classes)
    if classes < 2:
        raise ValueError(f"need at least 2 classes, got {classes}")
    finite = np.isfinite(x.astype(np.float32) if x.dtype == jnp.bfloat16 else x)
    if not finite.all():
        index = first_index(~finite)
        raise ValueError(f"{name} is not finite: {name}[{position(index)}] = {x[index]}")
    check_labels(y, classes)
    # A transfer, not jnp.asarray: in a fresh process jnp.asarray of a NumPy array compiles
    # a small copy program for every new shape (each fold of a cross-validation).
    return _to_jax(scores_or_X, x), _to_jax(labels, y)


def _to_jax(original, value: np.ndarray) -> jax.Array:
    """``original`` if it is a JAX array already, else ``value`` on the default device (in
    JAX's canonical dtype: float64 becomes float32 unless ``jax_enable_x64``)."""
    return original if isinstance(original, jax.Array) else jax.device_put(value)

"""Classification metrics over scores ``[..., C]`` and integer labels ``[...]``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from svmjax._checks import check_k, check_loss_inputs
from svmjax._loss_parts import one_hot

__all__ = ["top_k_accuracy"]


def top_k_accuracy(scores: ArrayLike, labels: ArrayLike, k: int = 1) -> jax.Array:
    r"""Share of examples whose true class is among the ``k`` highest scores.

    .. math::

        \frac1N \sum_i 1\big(\mathrm{rank}_i < k\big), \qquad
        \mathrm{rank}_i = \#\{c : s_{ic} > s_{iy_i}\} + \#\{c < y_i : s_{ic} = s_{iy_i}\}.

    Ties go to the lower class index, as in ``jax.lax.top_k`` and in
    :func:`svmjax.linear.predict`'s argmax: a true class tied with a lower-index class at
    the boundary counts as outside the top ``k``. So ``k = 1`` is the argmax accuracy.

    Args:
      scores: float ``[..., C]``.
      labels: integer class indices ``[...]`` in ``[0, C)``.
      k: a Python int in ``[1, C]``.

    Returns:
      A scalar in ``[0, 1]`` (the mean over all examples). A label outside ``[0, C)``
      raises ``ValueError`` eagerly; under ``jit`` it makes the result NaN.

    Example:
      >>> import jax.numpy as jnp
      >>> s = jnp.array([[0.1, 0.5, 0.4], [0.3, 0.3, 0.2]])
      >>> top_k_accuracy(s, jnp.array([2, 1]), k=1), top_k_accuracy(s, jnp.array([2, 1]), k=2)
      (Array(0., dtype=float32), Array(1., dtype=float32))
    """
    scores, labels, _, _ = check_loss_inputs(scores, labels, 0.0, None)
    n_classes = scores.shape[-1]
    k = check_k(k, n_classes, n_classes)
    is_true = one_hot(labels, n_classes)
    true = jnp.sum(jnp.where(is_true, scores, 0), axis=-1, keepdims=True)
    before = jnp.cumsum(is_true, axis=-1) == 0  # the classes c < y
    rank = jnp.sum((scores > true) | (before & (scores == true)), axis=-1)
    valid = (labels >= 0) & (labels < n_classes)
    hit = jnp.where(valid, (rank < k).astype(scores.dtype), jnp.nan)
    return jnp.mean(hit)

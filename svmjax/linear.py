r"""A linear multiclass model, :math:`s = xW + b`, and its regularised SVM objective.

Parameters are the pytree ``{"W": [D, C], "b": [C]}``. Features ``X`` are ``[N, D]``
floats, dense or sparse (a ``scipy.sparse`` matrix or array, or a
``jax.experimental.sparse`` ``BCOO`` / ``BCSR``: read as its non-zeros, never densified;
see the guide's section on sparse data); labels ``y`` are integer class indices ``[N]``
in ``[0, C)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from svmjax import _sparse, fused, registry
from svmjax._checks import as_key, is_concrete, poison_invalid
from svmjax._loss_parts import one_hot
from svmjax._sparse_products import matmul
from svmjax.validation import validate

__all__ = [
    "GRADS",
    "check_grad",
    "init",
    "scores",
    "predict",
    "objective",
    "project_sum_to_zero",
    "weston_watkins_closed_form",
]

GRADS = ("analytic", "autodiff")


def check_grad(grad: str) -> str:
    """``grad`` if it is one of :data:`GRADS`; a ``ValueError`` listing them otherwise."""
    if grad not in GRADS:
        raise ValueError(f"unknown grad {grad!r}; choose one of {', '.join(GRADS)}")
    return grad


def init(
    key: jax.Array,
    n_features: int,
    n_classes: int,
    *,
    scale: float = 1e-3,
    dtype: jnp.dtype = jnp.float32,
) -> dict[str, jax.Array]:
    """Small random weights and zero biases: ``W ~ scale * N(0, 1)`` ``[D, C]``, ``b = 0`` ``[C]``.

    ``key`` is a typed key (``jax.random.key``) or a raw one (``jax.random.PRNGKey``); the
    same seed gives the same weights either way.

    Example:
      >>> params = init(jax.random.key(0), 64, 10)
      >>> params["W"].shape, params["b"].shape
      ((64, 10), (10,))
    """
    if n_features < 1 or n_classes < 2:
        raise ValueError(f"need n_features >= 1 and n_classes >= 2, got {n_features}, {n_classes}")
    W = scale * jax.random.normal(as_key(key), (n_features, n_classes), dtype)
    return {"W": W, "b": jnp.zeros((n_classes,), dtype)}


def _features(X: ArrayLike) -> jax.Array | _sparse.SparseRows:
    """Dense ``X`` as a JAX array, sparse ``X`` as its non-zeros (checked when concrete)."""
    return _sparse.as_rows(X) if _sparse.is_sparse(X) else jnp.asarray(X)


def _check_features(params, X: jax.Array | _sparse.SparseRows) -> None:
    """Trace-time shape check of X against W."""
    W = params["W"]
    if X.ndim != 2 or X.shape[1] != W.shape[0]:
        raise ValueError(
            f"X must have shape [N, {W.shape[0]}] to match W of shape {W.shape}, got {X.shape}"
        )


def scores(params: dict[str, jax.Array], X: ArrayLike) -> jax.Array:
    """Class scores ``X @ W + b``: ``[N, D] -> [N, C]``.

    A sparse ``X`` is read as its non-zeros (the product gathers the rows of ``W`` they
    point to); ``jax.grad`` with respect to the parameters works, with respect to a sparse
    ``X``'s values it raises ``NotImplementedError``. A concrete sparse ``X`` is checked
    (an index outside its shape or a non-finite value raises); a traced ``BCOO`` with such
    an entry gives NaN scores.
    """
    features = _features(X)
    _check_features(params, features)
    return _scores(params, features)


def _scores(params: dict[str, jax.Array], X: jax.Array | _sparse.SparseRows) -> jax.Array:
    if isinstance(X, _sparse.SparseRows):
        return matmul(X, params["W"]) + params["b"][None, :]
    return X @ params["W"] + params["b"][None, :]


def project_sum_to_zero(params: dict[str, jax.Array]) -> dict[str, jax.Array]:
    r"""The nearest parameters (in the Euclidean norm) with :math:`\sum_c w_c = 0` and
    :math:`\sum_c b_c = 0`: each class's weights minus the mean over classes.

    The sum-to-zero constraint of Lee, Lin & Wahba (2004) and of the absolute-margin
    machines (see :func:`svmjax.registry.get`'s ``constraint``); training applies it after
    every step (projected gradient descent), which keeps it to float rounding.

    Example:
      >>> p = project_sum_to_zero({"W": jnp.array([[1.0, 2.0, 6.0]]), "b": jnp.ones(3)})
      >>> p["W"].tolist(), p["b"].tolist()
      ([[-2.0, -1.0, 3.0]], [0.0, 0.0, 0.0])
    """
    W, b = params["W"], params["b"]
    return {"W": W - jnp.mean(W, axis=1, keepdims=True), "b": b - jnp.mean(b)}


def predict(params: dict[str, jax.Array], X: ArrayLike) -> jax.Array:
    """Predicted class indices ``argmax_j (XW + b)_j``: ``[N, D] -> [N]`` int32.

    Ties go to the lowest class index (``jnp.argmax``).
    """
    return jnp.argmax(scores(params, X), axis=-1)


def objective(
    params: dict[str, jax.Array],
    X: ArrayLike,
    y: ArrayLike,
    *,
    loss: str = "weston_watkins",
    reg: ArrayLike = 0.0,
    margin: ArrayLike = 1.0,
    squared: bool = False,
    class_weights: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    grad: str = "analytic",
    loss_options: Mapping[str, Any] | None = None,
) -> jax.Array:
    r"""Mean per-example SVM loss of the linear model plus L2 penalty on ``W`` (cs231n form).

    .. math::

        J(W, b) = \frac{1}{N} \sum_{i=1}^{N} L(x_i W + b,\ y_i) + \lambda \lVert W \rVert_F^2

    (``b`` is not regularised; with ``class_weights`` the weighted losses are still
    divided by ``N``, as torch's ``reduction="mean"`` for ``MultiMarginLoss`` does). With
    ``sample_weight`` :math:`a_i \ge 0` the mean becomes
    :math:`\sum_i a_i L_i / \sum_i a_i`; 0/1 weights mask examples out (training uses
    this for the padded last batch).

    Args:
      params: ``{"W": [D, C], "b": [C]}``.
      X: float ``[N, D]``, dense or sparse (see :func:`scores`).
      y: integer class indices ``[N]`` in ``[0, C)``.
      loss: a registered loss name (:func:`svmjax.registry.names`), e.g.
        ``"weston_watkins"``, ``"crammer_singer"`` or ``"one_vs_rest"``.
      reg: :math:`\lambda` (cs231n's ``reg``).
      margin, squared, class_weights: passed to the loss (see :mod:`svmjax.losses`).
      sample_weight: optional non-negative ``[N]`` weights of the mean (see above).
      grad: ``"analytic"`` differentiates through the hand-written rules of
        :mod:`svmjax.analytic` (strict ``> 0`` at kinks), computed by
        :func:`svmjax.fused.mean_loss` (one pass over ``X``; accepts ``bfloat16`` ``X``;
        no forward mode; a sparse ``X`` goes through the analytic loss on the sparse
        product instead); ``"autodiff"`` through the pure definitions of
        :mod:`svmjax.losses` (1/2 at kinks). Values are identical.
      loss_options: the loss's extra keyword hyperparameters (e.g. ``{"k": 2}`` for
        ``top_k_hinge``), Python values fixed at compile time.

    Returns:
      A scalar. ``jax.grad(objective)`` gives ``{"W": [D, C], "b": [C]}``.

    Shapes and dtypes are checked always; label values once, when the labels are concrete
    (a label outside ``[0, C)`` raises; inside ``jit`` it makes the objective NaN). The
    features' values are not inspected here, so an eager loop of
    ``jax.grad(objective)`` calls does no O(N·D) host work per step: check ``X`` once at
    your boundary with :func:`svmjax.validate` (``fit`` and ``solve`` do).

    Example:
      >>> params = init(jax.random.key(0), 3, 2)
      >>> X, y = jnp.ones((4, 3)), jnp.array([0, 1, 1, 0])
      >>> g = jax.grad(objective)(params, X, y, reg=1e-3)
      >>> g["W"].shape
      (3, 2)

    Reference: cs231n notes, "Linear classification" (the full SVM loss).
    """
    entry, options = registry.get(loss), registry.loss_options(loss, loss_options)
    check_grad(grad)
    features, y = _features(X), jnp.asarray(y)
    _check_features(params, features)
    if features.shape[0] == 0:
        raise ValueError(f"X is empty (shape {features.shape})")
    if grad == "analytic" and not isinstance(features, _sparse.SparseRows):
        data_term = fused.mean_loss(  # one pass over X, weight gradient in [C, D]
            params,
            features,
            y,
            loss=loss,
            margin=margin,
            squared=squared,
            class_weights=class_weights,
            sample_weight=sample_weight,
            loss_options=dict(options),
        )
        return data_term + reg * jnp.sum(params["W"] ** 2)
    # grad == "autodiff": jax.grad of the pure loss; sparse X: of the analytic one too.
    loss_fn = entry.analytic if grad == "analytic" else entry.pure
    per_example = loss_fn(
        _scores(params, features),
        y,
        margin=margin,
        squared=squared,
        class_weights=class_weights,
        **dict(options),
    )
    if sample_weight is None:
        data_term = jnp.mean(per_example)
    else:
        sample_weight = jnp.asarray(sample_weight, per_example.dtype)
        if sample_weight.shape != per_example.shape:
            raise ValueError(
                f"sample_weight must have shape {per_example.shape} (one per example), "
                f"got {sample_weight.shape}"
            )
        data_term = jnp.sum(sample_weight * per_example) / jnp.sum(sample_weight)
    return data_term + reg * jnp.sum(params["W"] ** 2)


def weston_watkins_closed_form(
    W: ArrayLike,
    X: ArrayLike,
    y: ArrayLike,
    *,
    reg: ArrayLike = 0.0,
    margin: ArrayLike = 1.0,
) -> tuple[jax.Array, jax.Array]:
    r"""Weston–Watkins loss and ``dW`` by the vectorised cs231n formula, no autodiff.

    .. math::

        J = \frac{1}{N}\sum_i \sum_{j \ne y_i} \max(0, v_{ij}) + \lambda\lVert W\rVert^2,
        \qquad v_{ij} = s_{ij} - s_{iy_i} + \Delta, \quad S = XW,

        dW = \frac{1}{N} X^\top M + 2\lambda W, \qquad
        M_{ij} = 1(v_{ij} > 0)\ (j \ne y_i), \quad M_{iy_i} = -\sum_{j \ne y_i} M_{ij}.

    ``M`` is the ``[N, C]`` indicator-count matrix (strict ``> 0``, so 0 at kinks, as in
    :mod:`svmjax.analytic`). No bias: scores are ``X @ W``.

    Note the shapes: ``dW`` is ``[D, C]`` because ``X.T`` ``[D, N]`` meets ``M`` ``[N, C]``.
    A common wrong attempt, ``X * count[:, None]`` (the true-class row scaled by the
    violation count), has the shape of ``X`` ``[N, D]``, not of ``W``; it is only the
    per-example contribution to one column of ``dW``, before the sum over examples.

    Args:
      W: ``[D, C]`` weights. X: ``[N, D]`` features. y: ``[N]`` class indices in ``[0, C)``.
      reg: :math:`\lambda`. margin: :math:`\Delta`.

    Returns:
      ``(loss, dW)``: a scalar and ``[D, C]``.

    Example:
      >>> W = jnp.array([[1.0, -1.0], [0.5, 0.0]])
      >>> loss, dW = weston_watkins_closed_form(W, jnp.array([[1.0, 2.0]]), jnp.array([0]))
      >>> float(loss), dW.tolist()
      (0.0, [[0.0, 0.0], [0.0, 0.0]])

    Reference: cs231n assignment 1, ``svm_loss_vectorized``.
    """
    W, X, y = jnp.asarray(W), jnp.asarray(X), jnp.asarray(y)
    if X.ndim != 2 or W.ndim != 2 or X.shape[1] != W.shape[0]:
        raise ValueError(f"X [N, D] and W [D, C] do not match: X {X.shape}, W {W.shape}")
    if is_concrete(X, y):
        validate(X, y, n_classes=W.shape[1], name="X")
    n = X.shape[0]
    S = poison_invalid(X @ W, y)  # a bad label under jit gives NaN, not a number
    is_true = one_hot(y, W.shape[1])
    true_score = jnp.sum(jnp.where(is_true, S, 0), axis=1, keepdims=True)
    v = jnp.where(is_true, 0, S - true_score + margin)
    loss = jnp.sum(jnp.maximum(v, 0)) / n + reg * jnp.sum(W * W)
    M = jnp.where(jnp.isnan(v), jnp.nan, (v > 0).astype(W.dtype))
    M = jnp.where(is_true, -jnp.sum(M, axis=1, keepdims=True), M)
    dW = X.T @ M / n + 2 * reg * W
    return loss, dW

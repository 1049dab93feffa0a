"""Internal: the compiled training epoch that :func:`svmjax.train.fit` runs and
:func:`svmjax.grid.fit_grid` vmaps over configurations.

:func:`epoch_fn` is one ``jax.lax.scan`` of optax steps over the minibatches of one epoch;
:data:`run_epoch` is it compiled. Everything that varies between runs of the same shapes
(data, batch order, ``reg``, ``margin``, ``class_weights``, a learning rate kept in the
optimizer state) is a traced argument, and the rest is the hashable :class:`Static`, so a
second run of the same shapes and options compiles nothing. :func:`check_options` checks
the options the two entry points share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from svmjax import _checks as checks
from svmjax import cache, linear, registry, sharding
from svmjax._inputs import Consts, Data
from svmjax._sparse import SparseRows
from svmjax._sparse_products import take_rows

GATHER_ONCE_BYTES = 64 * 2**20  # epoch_fn copies a smaller X in batch order once per epoch


class Static(NamedTuple):
    """The compile-time options of an epoch (hashable)."""

    update: Any  # the optimizer's update function
    loss: str
    grad: str
    squared: bool
    options: tuple  # registry.loss_options
    mesh: Mesh | None
    top_k: tuple[int, ...] = ()  # the k of the top-k accuracies in the metrics (check_top_k)


def check_options(loss: str, grad: str, mesh: Mesh | None, **counts: int) -> None:
    """The options shared by :func:`svmjax.train.fit` and :func:`svmjax.grid.fit_grid`,
    checked."""
    registry.get(loss)
    linear.check_grad(grad)
    checks.check_mesh(mesh)
    for name, value in counts.items():
        checks.count(name, value)


def check_top_k(top_k: int | Sequence[int], n_classes: int) -> tuple[int, ...]:
    """``top_k`` of :func:`svmjax.train.fit` and :func:`svmjax.grid.fit_grid` (an int or a
    sequence of ints, each in ``[1, n_classes]``) as a tuple without repeats, in its order;
    ``ValueError`` naming the bad value otherwise."""
    if isinstance(top_k, int) and not isinstance(top_k, bool):
        top_k = (top_k,)
    if not isinstance(top_k, Sequence) or isinstance(top_k, str):
        raise ValueError(f"top_k must be an int or a sequence of ints, got {top_k!r}")
    try:
        return tuple(dict.fromkeys(checks.check_k(k, n_classes, n_classes) for k in top_k))
    except ValueError as error:
        raise ValueError(f"top_k: {error}") from None


def metric_names(split: str, top_k: tuple[int, ...]) -> list[str]:
    """The history's names of the accuracies on ``split`` (``"train"``, ``"val"``): the
    accuracy, then the top-k accuracy for each ``k`` of ``top_k``."""
    return [f"{split}_accuracy"] + [f"{split}_top{k}_accuracy" for k in top_k]


def true_class_rank(scores: jax.Array, y: jax.Array, axis: int = -1) -> jax.Array:
    r"""The rank of the true class among the scores, along the class axis ``axis``:

    .. math::

        \mathrm{rank}_i = \#\{c : s_{ic} > s_{iy_i}\} + \#\{c < y_i : s_{ic} = s_{iy_i}\},

    the rule of :func:`svmjax.metrics.top_k_accuracy` (ties to the lower class index, as
    the argmax), so ``rank < k`` is a top-k hit and ``rank == 0`` an argmax hit. ``y``
    has the shape of ``scores`` without ``axis`` (or broadcasts to it at equal rank); a
    label outside ``[0, C)`` (``-1``: padding) gives a meaningless rank, for the caller
    to mask."""
    axis = axis % scores.ndim
    shape = [scores.shape[axis] if a == axis else 1 for a in range(scores.ndim)]
    classes = jnp.arange(scores.shape[axis]).reshape(shape)
    y = jnp.expand_dims(y, axis)
    true = jnp.sum(jnp.where(classes == y, scores, 0), axis=axis, keepdims=True)
    return jnp.sum((scores > true) | ((classes < y) & (scores == true)), axis=axis)


def gather_fits(X: jax.Array, copies: int = 1) -> bool:
    """Whether ``copies`` copies of ``X`` in batch order (one per epoch, see
    :func:`gather_batches`) fit the budget :data:`GATHER_ONCE_BYTES`."""
    return copies * X.size * X.dtype.itemsize <= GATHER_ONCE_BYTES


def gather_batches(X: jax.Array, y: jax.Array, order: jax.Array):
    """The batches ``X[order]`` ``[..., width, D]``, ``y[order]``, their weights (0 on
    padding slots, ``order == -1``) and real examples per batch ``[...]``, for one row of
    ``order`` or for the whole epoch ``[n_batches, width]`` at once.

    One gather per epoch instead of one per step: the scan then slices contiguous batches,
    and the weights and counts cost no work inside the loop.
    """
    weight = (order >= 0).astype(X.dtype)
    index = jnp.maximum(order, 0)
    return X[index], y[index], weight, jnp.sum(weight, axis=-1)


def sparse_batch(X: SparseRows, y: jax.Array, index: jax.Array):
    """The minibatch of sparse ``X`` (:func:`svmjax._sparse_products.take_rows`) at the
    row indices ``index`` ``[P, b]`` within each of its ``P`` blocks (``-1``: padding
    slots): ``(X_b, y_b, weight, count)`` as :func:`gather_batches` gives them, ``y_b``
    and ``weight`` flat ``[P b]``."""
    weight = (index >= 0).astype(X.dtype)
    at = jnp.maximum(index, 0)
    y_b = jax.vmap(lambda y, i: y[i])(y.reshape(index.shape[0], -1), at)
    X_b = take_rows(X, index, X.batch_slots)
    return X_b, y_b.reshape(-1), weight.reshape(-1), jnp.sum(weight)


def all_finite(tree) -> jax.Array:
    """True when every entry of every leaf of ``tree`` is finite (a scalar)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def poison(check, tree):
    """``check + 0 * tree``, leaf by leaf: stays 0 while every entry ever added is finite and
    becomes NaN for good after an infinite or NaN one.

    Elementwise, so inside the scan it fuses with the parameter update that reads the same
    gradient; the one reduction (:func:`all_finite` of ``check``) runs once per epoch,
    not once per step.
    """
    return jax.tree.map(lambda c, x: c + 0 * x, check, tree)


def constrain(tree, mesh: Mesh | None, dim: int | None):
    """Pin every leaf of ``tree`` to be split along ``dim`` over ``mesh`` (``None``:
    replicated); a no-op without a mesh."""
    if mesh is None:
        return tree

    def one(x):
        spec = PartitionSpec() if dim is None else sharding.batch_spec(mesh, x.ndim, dim)
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    return jax.tree.map(one, tree)


def _accuracies(
    params: Any, X: Any, y: jax.Array, mesh: Mesh | None, top_k: tuple[int, ...]
) -> list[jax.Array]:
    """The accuracy of ``params`` on ``(X, y)``, then its top-k accuracy for each ``k`` of
    ``top_k`` (:func:`true_class_rank`), from one product; with a mesh, over the rows of
    label ``>= 0`` (``-1``: padding)."""
    if mesh is not None:
        X, y = constrain((X, y), mesh, 0)  # each device scores its rows
    scores = linear.scores(params, X)
    hits = [jnp.argmax(scores, axis=-1) == y]
    if top_k:
        rank = true_class_rank(scores, y)
        hits += [rank < k for k in top_k]
    if mesh is None:
        return [jnp.mean(hit) for hit in hits]
    real = y >= 0
    return [jnp.sum(hit & real) / jnp.sum(real) for hit in hits]


def epoch_fn(
    params,
    opt_state,
    order,
    reg,
    data: Data,
    consts: Consts,
    static: Static,
    gather_once: bool = True,
):
    """One epoch: a scan of optimizer steps over the minibatch indices ``order``.

    Without a mesh ``order`` is ``[n_batches, width]`` row indices
    (:func:`svmjax.batches.minibatches`), gathered once for the whole epoch
    (:func:`gather_batches`) when ``gather_once`` and ``X`` fits :func:`gather_fits`, else
    step by step (:func:`svmjax.grid.fit_grid` vmaps this function over configurations
    under a mesh and passes ``False``: one copy of ``X`` per configuration would not do).
    With ``static.mesh`` the data is laid out by rows (label ``-1`` on padding rows) and
    ``order`` is ``[n_batches, devices, b]``, each device's indices into its own rows
    (:func:`svmjax.batches.device_minibatches`): every device gathers its part of the
    batch from its own rows, the parameters and optimizer state are replicated, and XLA
    all-reduces the gradient. Sparse ``X`` (one block of rows per device) is gathered
    step by step (:func:`sparse_batch`).

    Each step differentiates ``linear.objective(params, X_b, y_b, reg=0, ...) + reg
    ||W||^2`` (the same objective, the penalty added here, so its value and its gradient
    ``2 reg W`` join the update's elementwise work). Finiteness of the values, gradients
    and parameters is checked once per epoch (:func:`poison`), not per step.
    """
    X: Any = data.X  # a jax.Array or SparseRows
    y, mesh = data.y, static.mesh
    projected = registry.get(static.loss).constraint == "sum_to_zero"
    options: dict[str, Any] = dict(loss=static.loss, margin=consts.margin, squared=static.squared)
    options |= dict(grad=static.grad, class_weights=consts.class_weights)
    options |= dict(loss_options=dict(static.options))

    sparse = isinstance(data.X, SparseRows)  # gathered step by step, own rows per device
    once = not sparse and mesh is None and gather_once and gather_fits(X)
    batches = gather_batches(X, y, order) if once else order
    if mesh is not None and not sparse:  # [devices, m, ...]: device d's rows, locally
        X_local = constrain(X.reshape(mesh.size, -1, X.shape[1]), mesh, 0)
        y_local = constrain(y.reshape(mesh.size, -1), mesh, 0)

    def batch(xs):
        if once:
            return xs
        if sparse:  # xs: [b] (one block) or [devices, b]
            X_b, y_b, weight, count = sparse_batch(X, y, xs.reshape(-1, xs.shape[-1]))
            return (*constrain((X_b, y_b, weight), mesh, 0), count)
        if mesh is None:
            return gather_batches(X, y, xs)
        weight = (xs >= 0).astype(X.dtype)  # padding slots (-1) get weight 0
        index = jnp.maximum(xs, 0)
        X_b = jax.vmap(lambda X, i: X[i])(X_local, index)  # [devices, b, D], no communication
        y_b = jax.vmap(lambda y, i: y[i])(y_local, index)
        flat = (X_b.reshape(-1, X.shape[1]), y_b.reshape(-1), weight.reshape(-1))
        return (*constrain(flat, mesh, 0), jnp.sum(weight))

    def loss(params, X_b, y_b, weight):
        data_term = linear.objective(params, X_b, y_b, sample_weight=weight, reg=0.0, **options)
        return data_term + reg * jnp.sum(params["W"] ** 2)

    def step(carry, xs):
        params, opt_state, check = carry
        X_b, y_b, weight, count = batch(xs)
        value, g = jax.value_and_grad(loss)(params, X_b, y_b, weight)
        updates, opt_state = static.update(g, opt_state, params)
        params: Any = optax.apply_updates(params, updates)
        if projected:
            params = linear.project_sum_to_zero(params)
        carry = constrain((params, opt_state, poison(check, g)), static.mesh, None)
        return carry, value * count

    check = jax.tree.map(jnp.zeros_like, params)
    (params, opt_state, check), values = jax.lax.scan(step, (params, opt_state, check), batches)
    n = X.shape[0] if mesh is None else jnp.sum(y >= 0)
    metrics = {
        "objective": jnp.sum(values) / n,
        "finite": jnp.all(jnp.isfinite(values)) & all_finite((check, params)),
    }
    rates = _accuracies(params, X, y, mesh, static.top_k)
    metrics |= dict(zip(metric_names("train", static.top_k), rates, strict=True))
    if data.X_val is not None and data.y_val is not None:
        rates = _accuracies(params, data.X_val, data.y_val, mesh, static.top_k)
        metrics |= dict(zip(metric_names("val", static.top_k), rates, strict=True))
    return params, opt_state, metrics


run_epoch = cache.jit(epoch_fn, static_argnames=("static", "gather_once"))
"""``epoch_fn`` compiled (``static`` and ``gather_once`` static)."""

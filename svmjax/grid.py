r"""Training a grid of configurations at once: :func:`fit_grid` runs the epoch of
:func:`svmjax.train.fit` for many learning rates, regularisation strengths and seeds in
one compiled program.

Configurations with the same seed see the same minibatches, so they share the gather of
each batch and its matrix products: the ``G`` weight matrices of one seed are stacked
along the class axis, ``[G·C, D]``, the scores of all of them come from one product
``W^\top X_b^\top`` (``[G·C, B]``), and the weight gradients from one product
``M^\top X_b`` (``[G·C, D]``, the layout of :mod:`svmjax.fused`). A batch of ``X`` is
thus read twice per step for the whole group instead of twice per configuration, and the
products run on ``G`` times more rows. Distinct seeds are ``jax.vmap``-ed over, each with
its own batches. The loop over epochs never waits for the device. With a mesh, the
configurations are split over the devices (each device trains whole configurations, no
collectives in the loop, nothing shared across configurations).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jax.typing import ArrayLike

from svmjax import _checks as checks
from svmjax import cache, linear, registry, sharding
from svmjax._epoch import (
    Static,
    all_finite,
    check_options,
    check_top_k,
    constrain,
    epoch_fn,
    gather_batches,
    gather_fits,
    metric_names,
    sparse_batch,
    true_class_rank,
)
from svmjax._inputs import prepare_consts, prepare_data
from svmjax._sparse import SparseRows
from svmjax._sparse_products import matmul, times
from svmjax.batches import key_words, minibatches
from svmjax.optim import make_optimizer

__all__ = ["GridResult", "fit_grid"]

Params = dict[str, jax.Array]


class GridResult(NamedTuple):
    """What :func:`fit_grid` returns; configuration ``k`` is ``configs[k] = (lr, reg, seed)``.

    ``params`` has leaves stacked ``[K, ...]``; ``history`` has ``[K, epochs]`` arrays (and
    ``"epoch"``, ``[epochs]``); ``best`` is the index of the best configuration.
    """

    params: Params
    history: dict[str, np.ndarray]
    configs: list[tuple[float, float, int]]
    best: int


def _class_major_scores(W: jax.Array, b: jax.Array, X: jax.Array) -> jax.Array:
    """Scores ``[G, C, N]`` of ``G`` linear models ``W`` ``[G, D, C]``, ``b`` ``[G, C]`` on
    the rows ``X`` ``[N, D]``, by one ``[G·C, D] x [D, N]`` product."""
    G, D, C = W.shape
    return (jnp.moveaxis(W, 2, 1).reshape(G * C, D) @ X.T).reshape(G, C, -1) + b[:, :, None]


@jax.custom_vjp
def _group_scores(W: jax.Array, b: jax.Array, X: jax.Array) -> jax.Array:
    """Scores ``[G, B, C]`` of ``G`` linear models ``W`` ``[G, D, C]``, ``b`` ``[G, C]`` on
    the rows ``X`` ``[B, D]``: :func:`_class_major_scores`, transposed.

    Class-major, as the weight gradient's cotangents ``[G·C, B]`` are: XLA reads the
    scores through the transpose inside the loss's own kernels, where a ``[B, G·C]``
    product would need the scores and the cotangents written out transposed, two more
    passes over the ``G·B·C`` values per step."""
    return jnp.swapaxes(_class_major_scores(W, b, X), 1, 2)


def _group_scores_fwd(W, b, X):
    return _group_scores(W, b, X), (W, X)


def _group_scores_bwd(res, dS):
    W, X = res
    G, D, C = W.shape
    Mt = jnp.moveaxis(dS, 1, 2).reshape(G * C, X.shape[0])  # [G·C, B]
    # Mt @ X ([G·C, D]) is the fast layout on CPU; the barrier keeps XLA from folding the
    # transpose back into the slow X.T @ M (see svmjax.fused).
    Gt = jax.lax.optimization_barrier(Mt @ X)
    dW = jnp.moveaxis(Gt.reshape(G, C, D), 2, 1)
    # db: the same Mt times a vector of ones, a matrix-vector product (XLA:CPU makes a row
    # sum a copy of Mt and a tree of partial sums); HIGHEST keeps accelerators from
    # rounding Mt to their faster, shorter default precision.
    ones = jnp.ones(X.shape[0], Mt.dtype)
    db = jnp.dot(Mt, ones, precision=jax.lax.Precision.HIGHEST).reshape(G, C)
    dX = Mt.T @ jnp.moveaxis(W, 2, 1).reshape(G * C, D)  # dead code under fit_grid (DCE)
    return dW, db, dX


_group_scores.defvjp(_group_scores_fwd, _group_scores_bwd)


def _sparse_group_scores(W: jax.Array, b: jax.Array, X: SparseRows, product=matmul):
    """Scores ``[G, C, N]`` of ``G`` linear models on sparse rows ``X``: one sparse
    product with the ``[D, G·C]`` weights (each non-zero gathers one row of all ``G``
    models), differentiable with respect to ``W`` and ``b``."""
    G, D, C = W.shape
    S = product(X, jnp.moveaxis(W, 0, 1).reshape(D, G * C))  # [N, G·C]
    return jnp.moveaxis(S.reshape(-1, G, C), 0, 2) + b[:, :, None]


def _group_accuracies(params, X, y, top_k: tuple[int, ...] = ()) -> list[jax.Array]:
    """Accuracy ``[G]`` of each of the ``G`` stacked models on ``(X, y)``, then its top-k
    accuracy ``[G]`` for each ``k`` of ``top_k`` (:func:`svmjax._epoch.true_class_rank`),
    from one product.

    The scores are laid out ``[G, C, N]`` (:func:`_class_major_scores`), so the argmax
    runs over a major axis, ``N`` examples at a time; over ``[G, N, C]`` it is a short
    scalar loop per example, slower on CPU than the product itself."""
    if isinstance(X, SparseRows):
        scores = _sparse_group_scores(params["W"], params["b"], X, times)
    else:
        scores = _class_major_scores(params["W"], params["b"], X)
    hits = [jnp.argmax(scores, axis=1) == y[None, :]]
    if top_k:
        rank = true_class_rank(scores, y[None, :], axis=1)  # [G, N]
        hits += [rank < k for k in top_k]
    return [jnp.mean(hit, axis=1) for hit in hits]


def _group_epoch(
    params, opt_state, order, regs, data, consts, static: Static, gather_once: bool = True
):
    """The training epoch for ``G`` configurations that share the batch
    ``order`` (leading axis ``G`` on ``params``, ``opt_state`` and ``regs``), with the
    gathers and products shared (see the module docstring). Each configuration's
    objective and gradient are those of :func:`svmjax.linear.objective` on the batch.
    With ``gather_once``, ``X`` is gathered in batch order once for the epoch, else
    batch by batch."""
    X, y = data.X, data.y
    entry = registry.get(static.loss)
    loss_fn = entry.analytic if static.grad == "analytic" else entry.pure
    options = dict(margin=consts.margin, squared=static.squared)
    options |= dict(class_weights=consts.class_weights, **dict(static.options))
    update = jax.vmap(static.update)

    def objectives(params, X_b, y_b, weight):
        if isinstance(X_b, SparseRows):
            S = jnp.swapaxes(_sparse_group_scores(params["W"], params["b"], X_b), 1, 2)
        else:
            S = _group_scores(params["W"], params["b"], X_b)  # [G, B, C]
        # The [G, B, C] scores as they are, labels broadcast: XLA:CPU indexes them more
        # cheaply in the loss's kernels than a [G·B, C] reshape with the labels tiled.
        per = loss_fn(S, jnp.broadcast_to(y_b, S.shape[:2]), **options)  # [G, B]
        data_term = jnp.sum(per * weight[None, :], axis=1) / jnp.sum(weight)
        values = data_term + regs * jnp.sum(params["W"] ** 2, axis=(1, 2))
        return jnp.sum(values), values

    def step(carry, batch):
        params, opt_state = carry
        if isinstance(X, SparseRows):
            X_b, y_b, weight, count = sparse_batch(X, y, batch[None])
        else:
            X_b, y_b, weight, count = batch if gather_once else gather_batches(X, y, batch)
        (_, values), g = jax.value_and_grad(objectives, has_aux=True)(params, X_b, y_b, weight)
        updates, opt_state = update(g, opt_state, params)
        params: Any = optax.apply_updates(params, updates)
        if entry.constraint == "sum_to_zero":
            params = jax.vmap(linear.project_sum_to_zero)(params)
        return (params, opt_state), values * count

    batches = gather_batches(X, y, order) if gather_once else order
    (params, opt_state), values = jax.lax.scan(step, (params, opt_state), batches)
    # No per-step check of the gradients: with the optimizers of make_optimizer (sgd,
    # momentum, adam, any schedule) a non-finite gradient makes the parameters non-finite
    # for good (inf - inf, 0 * inf and NaN are NaN), so the parameters at the end of the
    # epoch and the objectives cover it, for a pass over [G, D, C] less per step.
    finite = jnp.all(jnp.isfinite(values), axis=0) & jax.vmap(all_finite)(params)
    metrics = {"objective": jnp.sum(values, axis=0) / X.shape[0], "finite": finite}
    rates = _group_accuracies(params, X, y, static.top_k)
    metrics |= dict(zip(metric_names("train", static.top_k), rates, strict=True))
    if data.X_val is not None and data.y_val is not None:
        rates = _group_accuracies(params, data.X_val, data.y_val, static.top_k)
        metrics |= dict(zip(metric_names("val", static.top_k), rates, strict=True))
    return params, opt_state, metrics


def _epoch(params, opt_state, orders, regs, alive, data, consts, *, static, mesh):
    """One epoch of every configuration; a configuration that diverged stays frozen.

    Without ``mesh`` the leading axes are ``[S, G]`` (seeds, configurations of a seed;
    ``orders`` ``[S, ...]``): :func:`_group_epoch` vmapped over seeds. With ``mesh``,
    the leading axis is the configuration (``orders`` one per configuration), split over
    the devices; the epoch of :func:`svmjax.train.fit` vmapped, each device trains its
    configurations alone.
    """
    if mesh is None:  # one copy of X in batch order per seed, if they fit the budget
        sparse = isinstance(data.X, SparseRows)  # sparse rows: gathered step by step
        once = not sparse and gather_fits(data.X, copies=orders.shape[0])
        fn = functools.partial(_group_epoch, static=static, gather_once=once)
    else:  # vmapped over configurations: no per-configuration copy of X
        fn = functools.partial(epoch_fn, static=static, gather_once=False)
    run = jax.vmap(fn, in_axes=(0, 0, 0, 0, None, None))
    new_params, new_opt_state, metrics = run(params, opt_state, orders, regs, data, consts)
    alive = alive & metrics.pop("finite")

    def keep(new, old):
        return jnp.where(alive.reshape(alive.shape + (1,) * (new.ndim - alive.ndim)), new, old)

    params, opt_state = jax.tree.map(keep, (new_params, new_opt_state), (params, opt_state))
    metrics["objective"] = jnp.where(alive, metrics["objective"], jnp.nan)
    return constrain((params, opt_state, alive, metrics), mesh, 0)


@functools.partial(cache.jit, cpu_options=cache.DOTS_ONLY, static_argnames=("static", "mesh"))
def _grid_epoch(params, opt_state, orders, regs, alive, data, consts, *, static, mesh):
    """:func:`_epoch` compiled with YNNPACK on the products (:data:`svmjax.cache.DOTS_ONLY`)."""
    return _epoch(params, opt_state, orders, regs, alive, data, consts, static=static, mesh=mesh)


@functools.partial(cache.jit, cpu_options=cache.XLA_DOTS, static_argnames=("static", "mesh"))
def _grid_epoch_xla_dots(params, opt_state, orders, regs, alive, data, consts, *, static, mesh):
    """:func:`_epoch` compiled with XLA's own products (:data:`svmjax.cache.XLA_DOTS`)."""
    return _epoch(params, opt_state, orders, regs, alive, data, consts, static=static, mesh=mesh)


# A group of at least this many score columns (configurations x classes) on at most this
# many features runs its products faster with XLA's own emitters than with YNNPACK's.
_XLA_DOTS_MIN_COLUMNS = 128
_XLA_DOTS_MAX_FEATURES = 128


def _epoch_program(group_columns: int, n_features: int, mesh: Mesh | None):
    """The compiled epoch for a group of ``group_columns = G·C`` score columns on
    ``n_features`` features: :data:`_grid_epoch_xla_dots` (:data:`svmjax.cache.XLA_DOTS`)
    for a wide group on few features, where the step's products ``[G·C, D] x [D, B]`` and
    ``[G·C, B] x [B, D]`` are wide and short, else :data:`_grid_epoch`
    (:data:`svmjax.cache.DOTS_ONLY`: YNNPACK for the products). The two differ only in
    speed, never in the numbers beyond float rounding. With a mesh, always
    :data:`_grid_epoch` (configurations apart, nothing shared)."""
    wide = group_columns >= _XLA_DOTS_MIN_COLUMNS and n_features <= _XLA_DOTS_MAX_FEATURES
    return _grid_epoch_xla_dots if mesh is None and wide else _grid_epoch


def fit_grid(
    params: Params,
    X: ArrayLike,
    y: ArrayLike,
    *,
    key: jax.Array,
    learning_rates: tuple[float, ...] = (0.03, 0.1, 0.3),
    regs: tuple[float, ...] = (0.0, 1e-3),
    seeds: tuple[int, ...] = (0,),
    optimizer: str = "sgd",
    schedule: str | Callable | None = None,
    validation: tuple[ArrayLike, ArrayLike] | None = None,
    epochs: int = 10,
    batch_size: int = 256,
    loss: str = "weston_watkins",
    grad: str = "analytic",
    margin: float = 1.0,
    squared: bool = False,
    class_weights: ArrayLike | None = None,
    loss_options: Mapping[str, Any] | None = None,
    top_k: int | Sequence[int] = (),
    mesh: Mesh | None = None,
) -> GridResult:
    """Train every configuration in ``learning_rates × regs × seeds`` at once (``jax.vmap``).

    All configurations start from ``params``; the seed changes only the batch order.
    Configuration ``(lr, reg, seed)`` is :func:`svmjax.train.fit` with ``reg=reg``,
    ``key=jax.random.fold_in(key, seed)`` and ``optimizer=make_optimizer(optimizer, lr,
    schedule)`` (:func:`svmjax.optim.make_optimizer`), where ``"cosine"`` decays over the
    whole run. It agrees with that run to float rounding, not bit for bit: the vmapped code
    may sum in another order. A configuration that diverges is frozen at its last finite
    parameters, its ``objective`` is NaN from then on, and it is never ``best``. The loop
    over epochs never waits for the device, and one compilation serves the whole grid.

    Args:
      params: initial ``{"W": [D, C], "b": [C]}``, shared by all configurations.
      learning_rates, regs, seeds: the grid axes, ``K`` configurations in all, ordered as
        ``itertools.product(learning_rates, regs, seeds)``.
      optimizer, schedule: as for :func:`svmjax.optim.make_optimizer`.
      X, y, key, validation, epochs, batch_size, loss, grad, margin, squared,
        class_weights, loss_options, top_k: as for :func:`svmjax.train.fit`. Learning
        rates must be finite and ``> 0``, regs finite and ``>= 0``.
      mesh: a ``jax.sharding.Mesh`` to split the *configurations* over its devices (the
        data is replicated; each device trains its configurations, no collectives in the
        loop). ``K`` is padded to a multiple of ``mesh.size`` with copies of the last
        configuration, which are dropped from the result. Results agree with the run
        without a mesh to float rounding; ``params`` come back replicated.

    Returns:
      A :class:`GridResult`. Its ``history`` has the names of :func:`svmjax.train.fit`'s
      (``top_k`` included). ``best`` has the highest final ``val_accuracy`` (ties: the
      lowest final objective) or, without ``validation``, the lowest final objective.

    Raises:
      ValueError, TypeError: as :func:`svmjax.train.fit` and
        :func:`svmjax.optim.make_optimizer`; an empty grid axis.
      FloatingPointError: every configuration diverged.

    Example:
      >>> X = jax.random.normal(jax.random.key(0), (40, 3))
      >>> y = (X[:, 0] > 0).astype(jnp.int32)
      >>> grid = fit_grid(linear.init(jax.random.key(1), 3, 2), X, y, key=jax.random.key(2),
      ...                 learning_rates=(0.01, 0.1), regs=(0.0, 1e-3), epochs=2)
      >>> grid.params["W"].shape, grid.history["objective"].shape, grid.configs[1]
      ((4, 3, 2), (4, 2), (0.01, 0.001, 0))
    """
    check_options(loss, grad, mesh, epochs=epochs, batch_size=batch_size)
    key = checks.as_key(key)
    mesh = None if mesh is None else sharding.auto_axes(mesh)
    data = prepare_data(params, X, y, validation, mesh, batch_size=batch_size)
    consts = prepare_consts(params, margin, class_weights)
    frozen = registry.loss_options(loss, loss_options)
    top_k = check_top_k(top_k, params["W"].shape[1])
    if registry.get(loss).constraint == "sum_to_zero":
        params = linear.project_sum_to_zero(params)
    configs = _configs(learning_rates, regs, seeds)
    n, k = data.X.shape[0], len(configs)
    # With a mesh, pad the configuration axis to a multiple of the devices with copies of the
    # last configuration; they are trained and then dropped.
    padded = configs + [configs[-1]] * (0 if mesh is None else -k % mesh.size)
    batch_size = min(batch_size, n)
    decay_steps = epochs * -(-n // batch_size) if schedule == "cosine" else None
    tx = make_optimizer(optimizer, configs[0][0], schedule, decay_steps=decay_steps)
    stacked = jax.tree.map(lambda p: jnp.broadcast_to(p, (len(padded), *p.shape)), params)
    opt_state = _init_states(optimizer, schedule, decay_steps, [lr for lr, _, _ in padded], params)
    regs_k = jnp.array([reg for _, reg, _ in padded], params["W"].dtype)
    seed_words = {seed: key_words(jax.random.fold_in(key, seed)) for seed in seeds}
    words = [seed_words[seed] for _, _, seed in padded]
    static = Static(tx.update, loss, grad, bool(squared), frozen, None, top_k)
    alive, rows = jnp.ones(len(padded), bool), []

    def split(tree, mesh: Mesh):  # configurations over the devices
        return jax.tree.map(
            lambda x: sharding.put(x, mesh, sharding.batch_spec(mesh, x.ndim)), tree
        )

    n_seeds = len(seeds)
    if mesh is not None:
        stacked, opt_state, regs_k, alive = split((stacked, opt_state, regs_k, alive), mesh)
        consts = sharding.put(consts, mesh)
    else:  # configurations k = g * n_seeds + s, regrouped [seed s, configuration g]
        stacked, opt_state, regs_k, alive = jax.tree.map(
            functools.partial(_by_seed, n_seeds=n_seeds), (stacked, opt_state, regs_k, alive)
        )
        words = words[:n_seeds]  # the seeds' keys, in order
    n_classes = params["W"].shape[1]
    program = _epoch_program(len(padded) // n_seeds * n_classes, data.X.shape[1], mesh)
    for epoch in range(1, epochs + 1):
        orders = np.stack([minibatches(w, epoch, n, batch_size) for w in words])
        if mesh is not None:
            orders = split(orders, mesh)
        stacked, opt_state, alive, metrics = program(
            stacked, opt_state, orders, regs_k, alive, data, consts, static=static, mesh=mesh
        )
        rows.append(metrics)
    if mesh is not None:  # gather to every process, then drop the padding configurations
        stacked, rows, alive = sharding.put((stacked, rows, alive), mesh)
        stacked = jax.tree.map(lambda x: x[:k], stacked)
    else:
        stacked, rows, alive = jax.tree.map(_by_config, (stacked, rows, alive))
    return _result(stacked, rows, alive, configs, epochs, validation is not None)


def _init_states(optimizer, schedule, decay_steps, learning_rates, params):
    """The optimizer states of every learning rate, stacked ``[K, ...]``: one vmapped
    ``init`` (the rate lives in the state), not ``K`` eager ones (host work growing with
    ``K``)."""

    def init(lr):
        return make_optimizer(optimizer, lr, schedule, decay_steps=decay_steps).init(params)

    return jax.vmap(init)(jnp.asarray(learning_rates, params["W"].dtype))


def _by_seed(x: jax.Array, n_seeds: int) -> jax.Array:
    """``[K, ...]`` in configuration order to ``[n_seeds, K // n_seeds, ...]``."""
    return jnp.swapaxes(x.reshape(-1, n_seeds, *x.shape[1:]), 0, 1)


def _by_config(x: jax.Array) -> jax.Array:
    """The inverse of :func:`_by_seed`."""
    return jnp.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:])


def _configs(learning_rates, regs, seeds) -> list[tuple[float, float, int]]:
    """The grid ``learning_rates x regs x seeds``, checked."""
    for lr in learning_rates:
        checks.scalar("learning rate", lr, positive=True)
    for reg in regs:
        checks.scalar("reg", reg, positive=False)
    grid = itertools.product(learning_rates, regs, seeds)
    configs = [(float(lr), float(reg), int(seed)) for lr, reg, seed in grid]
    if not configs:
        raise ValueError("learning_rates, regs and seeds must each be non-empty")
    return configs


def _result(stacked, rows, alive, configs, epochs, validated) -> GridResult:
    """The :class:`GridResult` of the first ``len(configs)`` configurations."""
    k = len(configs)
    rows, alive = jax.device_get((rows, alive))
    rows, alive = jax.tree.map(lambda x: x[:k], rows), alive[:k]
    if not alive.any():
        raise FloatingPointError("every configuration diverged; try smaller learning rates")
    history = {name: np.stack([row[name] for row in rows], axis=1) for name in rows[0]}
    history["epoch"] = np.arange(1, epochs + 1)
    final = history["objective"][:, -1]
    score = history["val_accuracy"][:, -1] if validated else -final
    best = int(np.lexsort((final, -np.where(alive, score, -np.inf)))[0])
    return GridResult(stacked, history, configs, best)

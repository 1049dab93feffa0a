r"""Minibatch training of the linear SVM (:mod:`svmjax.linear`) with any optax optimizer.

Every step differentiates :func:`svmjax.linear.objective` on one minibatch (so a faster
objective there is picked up here) and applies one optax update.

Minibatches. Epoch ``e`` (1-based) visits the examples in the order
``np.random.default_rng([*jax.random.key_data(key), e]).permutation(N)``, cut into
``ceil(N / batch_size)`` batches; the last one is padded (with example 0) and the padding
gets weight 0 through ``sample_weight``, so every example counts and none is dropped. The
order is drawn with NumPy on the host rather than with ``jax.random.permutation`` because
XLA:CPU sorts slowly (a permutation would cost about as much as a dozen training steps).
The order depends only on ``(key, e)``, so a resumed run sees the same batches as an
uninterrupted one; a raw key (``jax.random.PRNGKey``) and a typed key
(``jax.random.key``) of the same seed give the same order.

Compilation. One jitted *epoch* function (a ``jax.lax.scan`` over the minibatches) is
called from a Python loop over epochs. Everything that varies between runs of the same
shapes (data, batch order, ``reg``, ``margin``, ``class_weights`` and the learning rate of
optimizers from :func:`svmjax.optim.make_optimizer`, which lives in the optimizer state) is
a traced argument, so a run compiles once and a second run with the same shapes and
options compiles nothing. The loop over epochs stays on the host because there is work
between epochs: the divergence check (an epoch with a non-finite objective, gradient or
parameter raises :class:`TrainingDiverged` *before* it is recorded or checkpointed), the
checkpoint (:mod:`svmjax.checkpoint`) and the progress bar. That host work overlaps the
device: epoch ``e + 1`` is dispatched (asynchronously) before epoch ``e`` is checked and
recorded, and is thrown away if ``e`` diverged. The same compiled epoch runs whether
those are on or off, so checkpointing and resuming never change the numbers.
:func:`svmjax.grid.fit_grid` vmaps the same epoch function over configurations.

Constraints. A loss registered with ``constraint="sum_to_zero"`` (:mod:`svmjax.registry`)
trains by projected gradient: the initial parameters and every update are projected onto
:math:`\sum_c w_c = 0,\ \sum_c b_c = 0` (:func:`svmjax.linear.project_sum_to_zero`).

Devices. Without ``mesh`` everything runs where ``params`` live. With a
``jax.sharding.Mesh`` of ``P`` devices (all its axes used as one flat axis; see
:mod:`svmjax.sharding`), :func:`fit` is data-parallel over *rows*: ``X``, ``y`` (and the
validation data) are laid out by :func:`svmjax.sharding.shard_rows`: device ``d`` holds
rows ``[d m, (d + 1) m)``, ``m = ceil(N / P)``, the last ``P m - N`` rows being padding
(label ``-1``, never drawn, not counted in the metrics). Nothing is replicated but the
parameters, the optimizer state and the loss constants. The batch order under a mesh is
per device, and differs from the one-device order: in epoch ``e`` device ``d`` permutes
its own ``n_d`` real rows with ``np.random.default_rng([*jax.random.key_data(key), e,
d]).permutation(n_d)`` and cuts that into ``ceil(m / b)`` batches of ``b =
ceil(batch_size / P)`` slots, the slots past ``n_d`` padded with weight 0
(:func:`svmjax.batches.device_minibatches`). Step ``k`` trains on the union of every device's batch
``k``: each device gathers its ``b`` rows from its own rows (no communication), and XLA's
SPMD partitioner inserts one all-reduce of the gradient (and the loss terms) per step;
sharding constraints inside the step pin this layout. The order depends only on ``(key,
e, P)``, so the same key on the same mesh gives the same bits, and a resumed run the same
batches as an uninterrupted one. A checkpoint holds plain arrays: it resumes on another
layout too, whose later epochs then follow that layout's order. Several processes work
the same way (see :func:`fit`'s ``mesh``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jax.typing import ArrayLike

from svmjax import cache, linear, registry, sharding
from svmjax import checkpoint as checkpoints
from svmjax import validation as checks  # fit's argument `validation` is the data
from svmjax.batches import (
    Consts,
    Data,
    key_words,
    mesh_order,
    minibatches,
    prepare_consts,
    prepare_data,
    shard_data,
)
from svmjax.checkpoint import TrainState
from svmjax.optim import DEFAULT_OPTIMIZER

__all__ = ["TrainingDiverged", "fit"]

Params = dict[str, jax.Array]


class TrainingDiverged(FloatingPointError):
    """Raised by :func:`fit` when an epoch produces a non-finite objective, gradient or
    parameter. ``epoch`` is that (1-based) epoch; ``params`` and ``history`` are those at the
    end of the previous epoch (the initial parameters and an empty history for epoch 1)."""

    def __init__(self, epoch: int, params: Params, history: dict[str, np.ndarray]):
        super().__init__(
            f"training diverged in epoch {epoch}: the objective, a gradient or a parameter "
            "became non-finite (try a smaller learning rate); .params holds the parameters "
            "after the last finite epoch"
        )
        self.epoch, self.params, self.history = epoch, params, history


GATHER_ONCE_BYTES = 64 * 2**20  # epoch_fn copies a smaller X in batch order once per epoch


def gather_fits(X: jax.Array, copies: int = 1) -> bool:
    """Whether ``copies`` copies of ``X`` in batch order (one per epoch, see
    :func:`gather_batches`) fit the budget :data:`GATHER_ONCE_BYTES`."""
    return copies * X.size * X.dtype.itemsize <= GATHER_ONCE_BYTES


class Static(NamedTuple):
    """The compile-time options of an epoch (hashable)."""

    update: Any  # the optimizer's update function
    loss: str
    grad: str
    squared: bool
    options: tuple  # registry.loss_options
    mesh: Mesh | None


# ---------------------------------------------------------------------------------- epochs


def all_finite(tree) -> jax.Array:
    """True when every entry of every leaf of ``tree`` is finite (a scalar)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def poison(check, tree):
    """``check + 0 * tree``, leaf by leaf: stays 0 while every entry ever added is finite and
    becomes NaN for good after an infinite or NaN one.

    Elementwise, so inside the scan it fuses with the parameter update that reads the same
    gradient; the one reduction (:func:`all_finite` of ``check``) runs once per epoch,
    not once per step (a reduction costs a few microseconds per step on XLA:CPU).
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


def _accuracy(params: Any, X: jax.Array, y: jax.Array, mesh: Mesh | None = None) -> jax.Array:
    if mesh is None:
        return jnp.mean(linear.predict(params, X) == y)
    X, y = constrain((X, y), mesh, 0)  # each device scores its rows; label -1: padding
    hits = jnp.sum((linear.predict(params, X) == y) & (y >= 0))
    return hits / jnp.sum(y >= 0)


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

    Without a mesh ``order`` is ``[n_batches, width]`` row indices (:func:`minibatches`),
    gathered once for the whole epoch (:func:`gather_batches`) when ``gather_once`` and
    ``X`` holds at most 64 MiB (the epoch's copy of ``X`` then costs little memory; for a
    larger ``X`` the per-step overhead it saves is negligible anyway), else step by step
    (:func:`svmjax.grid.fit_grid` vmaps this function over configurations under a mesh and
    passes ``False``: one copy of ``X`` per configuration would not do). With ``static.mesh`` the
    data is laid out by rows (:func:`svmjax.sharding.shard_rows`, label ``-1`` on padding
    rows) and ``order`` is ``[n_batches, devices, b]``, each device's indices into its own
    rows (:func:`svmjax.batches.device_minibatches`): every device gathers its part of the
    batch from its own rows, the parameters and optimizer state are replicated, and XLA
    all-reduces the gradient.

    Each step differentiates ``linear.objective(params, X_b, y_b, reg=0, ...) + reg
    ||W||^2`` (the same objective, the penalty added here, so its value and its gradient
    ``2 reg W`` join the update's elementwise work). Finiteness of the values, gradients
    and parameters is checked once per epoch (:func:`poison`), not per step.
    """
    X, y, mesh = data.X, data.y, static.mesh
    projected = registry.get(static.loss).constraint == "sum_to_zero"
    options: dict[str, Any] = dict(loss=static.loss, margin=consts.margin, squared=static.squared)
    options |= dict(grad=static.grad, class_weights=consts.class_weights)
    options |= dict(loss_options=dict(static.options))

    once = mesh is None and gather_once and gather_fits(X)
    batches = gather_batches(X, y, order) if once else order
    if mesh is not None:  # [devices, m, ...]: device d's rows, indexed locally
        X_local = constrain(X.reshape(mesh.size, -1, X.shape[1]), mesh, 0)
        y_local = constrain(y.reshape(mesh.size, -1), mesh, 0)

    def batch(xs):
        if once:
            return xs
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
        "train_accuracy": _accuracy(params, X, y, static.mesh),
        "finite": jnp.all(jnp.isfinite(values)) & all_finite((check, params)),
    }
    if data.X_val is not None and data.y_val is not None:
        metrics["val_accuracy"] = _accuracy(params, data.X_val, data.y_val, static.mesh)
    return params, opt_state, metrics


run_epoch = cache.jit(epoch_fn, static_argnames=("static", "gather_once"))


# ---------------------------------------------------------------------------------- checks


def check_options(loss: str, grad: str, mesh: Mesh | None, **counts: int) -> None:
    """The options shared by :func:`fit` and :func:`svmjax.grid.fit_grid`, checked."""
    registry.get(loss)
    linear.check_grad(grad)
    checks.check_mesh(mesh)
    for name, value in counts.items():
        checks.count(name, value)


def _append(history: dict[str, np.ndarray], epoch: int, metrics: dict) -> dict[str, np.ndarray]:
    row = {"epoch": epoch} | {k: float(v) for k, v in metrics.items()}
    return {k: np.append(history.get(k, np.zeros(0, type(v))), v) for k, v in row.items()}


def _progress_bar(total: int, initial: int):
    try:
        from tqdm.auto import tqdm
    except ImportError as error:
        raise ImportError(
            "progress=True needs tqdm: pip install 'svmjax[progress]' (or pip install tqdm)"
        ) from error
    return tqdm(total=total, initial=initial, unit="epoch", desc="fit")


# ------------------------------------------------------------------------------------- fit


def _start(params, optimizer, key, options, resume_from, epochs) -> TrainState:
    """The state to train from: fresh, or read from ``resume_from`` and checked."""
    state = TrainState(params, optimizer.init(params), key, 0, {})
    if resume_from is None:
        return state
    state = checkpoints.load(resume_from, state, options=options)
    if key_words(state.key) != key_words(key):
        raise ValueError(f"key differs from the one checkpoint {resume_from} was written with")
    if state.epoch > epochs:
        raise ValueError(f"checkpoint {resume_from} is at epoch {state.epoch} > {epochs=}")
    return state


def fit(
    params: Params,
    X: ArrayLike,
    y: ArrayLike,
    *,
    key: jax.Array,
    loss: str = "weston_watkins",
    grad: str = "analytic",
    optimizer: optax.GradientTransformation | None = None,
    reg: float = 0.0,
    epochs: int = 10,
    batch_size: int = 256,
    validation: tuple[ArrayLike, ArrayLike] | None = None,
    progress: bool = False,
    resume_from: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    margin: float = 1.0,
    squared: bool = False,
    class_weights: ArrayLike | None = None,
    loss_options: Mapping[str, Any] | None = None,
    mesh: Mesh | None = None,
) -> tuple[Params, dict[str, np.ndarray]]:
    """Train the linear SVM ``{"W": [D, C], "b": [C]}`` by minibatch optimisation.

    Each step descends on :func:`svmjax.linear.objective` of one shuffled minibatch; see the
    module docstring for the batch order, the padded last batch and the compile-once design.

    Args:
      params: initial parameters, e.g. from :func:`svmjax.linear.init`.
      X, y: features ``[N, D]`` and integer labels ``[N]`` in ``[0, C)``. Floating-point
        features are cast to the dtype of ``W``; integer or boolean features (e.g. raw
        ``uint8`` pixels) are converted to it, unscaled. Any other dtype is a ``TypeError``.
      key: a typed key (``jax.random.key``) or a raw one (``jax.random.PRNGKey``; the same
        seed gives the same bits either way). It alone decides the batch order, so the
        same key gives bit-identical parameters on the same devices (one device, or the
        same mesh).
      loss, grad, reg, margin, squared, class_weights: as in :func:`svmjax.linear.objective`,
        checked eagerly: ``reg`` finite and ``>= 0``; ``margin`` finite and ``> 0`` (with a
        margin ``<= 0`` the zero model ``W = 0`` already minimises the objective, so
        training could learn nothing; the loss functions themselves accept any margin);
        ``class_weights`` of shape ``[C]``, finite and ``>= 0``. ``loss`` is any registered
        name (:func:`svmjax.registry.names`); a loss with a sum-to-zero constraint trains
        by projected steps (see the module docstring).
      loss_options: the loss's extra keyword hyperparameters (e.g. ``{"k": 2}``).
      optimizer: any optax transformation; ``None`` means
        :data:`svmjax.optim.DEFAULT_OPTIMIZER` (plain SGD, learning rate 0.1). Optimizers
        from :func:`svmjax.optim.make_optimizer` keep the learning
        rate in their state, so a new learning rate reuses the compiled code; any other
        optimizer object is compiled for anew.
      epochs: total number of epochs, also when resuming.
      batch_size: examples per step (at most ``N``).
      validation: optional ``(X_val, y_val)``, scored after every epoch.
      progress: show a tqdm progress bar (needs the ``progress`` extra).
      resume_from: a checkpoint file from an earlier ``fit``: training continues after its
        epoch, from its parameters, optimizer state (learning rate included) and history,
        and ends bit-identical to an uninterrupted run. The structure of ``params``,
        ``key``, the options and ``N`` must match the checkpoint's.
      checkpoint: a file path (``.npz`` by convention; missing directories are created)
        rewritten every ``checkpoint_every`` epochs and after the last epoch. It may equal
        ``resume_from``. With several processes only process 0 writes it (put it on a
        file system every process can read, to resume).
      mesh: a ``jax.sharding.Mesh`` (e.g. :func:`svmjax.sharding.data_mesh`, or any mesh,
        whose axes are then used as one flat data axis of type ``Auto``) for
        data-parallel training over rows (see the module docstring): each device holds
        ``ceil(N / devices)`` rows of ``X`` and ``y`` and draws its part of every batch
        (``ceil(batch_size / devices)`` slots) from them; parameters and optimizer state
        are replicated and XLA all-reduces the gradient. The batch order is that of the
        mesh (the same key on the same mesh gives the same bits), not the one-device
        order. ``X``, ``y`` (and ``validation``) may be host arrays, the same on every
        process (each device receives only its rows), or global ``jax.Array`` s, e.g. from
        ``svmjax.sharding.shard_rows(X_mine, mesh, n=N)`` on each process holding only its
        rows ``svmjax.sharding.process_slice(N, mesh)``; those are checked on the devices,
        never gathered. Results come back replicated on every device and process.
        ``None`` (default): the devices of ``params``, unchanged.

    Returns:
      ``(params, history)``. ``history`` maps ``"epoch"`` (1-based), ``"objective"`` (the
      epoch's minibatch objectives, each taken before its step, averaged with weights = real
      examples per batch), ``"train_accuracy"`` (end-of-epoch parameters on all of ``X``)
      and with ``validation`` ``"val_accuracy"`` to NumPy arrays ``[epochs]``.

    Raises:
      ValueError, TypeError: a bad option, key, mesh or input (checked before any work), or
        a checkpoint that does not match or cannot be read.
      TrainingDiverged: an epoch produced a non-finite value; no checkpoint is written for it.

    Example:
      >>> X = jax.random.normal(jax.random.key(0), (40, 3))
      >>> y = (X[:, 0] > 0).astype(jnp.int32)
      >>> params, history = fit(linear.init(jax.random.key(1), 3, 2), X, y,
      ...                       key=jax.random.key(2), epochs=3, batch_size=16)
      >>> history["epoch"], params["W"].shape
      (array([1, 2, 3]), (3, 2))
    """
    counts = dict(epochs=epochs, batch_size=batch_size, checkpoint_every=checkpoint_every)
    check_options(loss, grad, mesh, **counts)
    key = checks.as_key(key)
    mesh = None if mesh is None else sharding.auto_axes(mesh)
    if mesh is None:
        data = prepare_data(params, X, y, validation_data=validation)
        n = data.X.shape[0]
    else:
        data, n = shard_data(params, X, y, validation, mesh)
    consts = prepare_consts(params, margin, class_weights)
    frozen = registry.loss_options(loss, loss_options)
    if registry.get(loss).constraint == "sum_to_zero":
        params = linear.project_sum_to_zero(params)
    batch_size = min(batch_size, n)
    optimizer = DEFAULT_OPTIMIZER if optimizer is None else optimizer
    reg_value = checks.scalar("reg", reg, positive=False)
    options = {"loss": loss, "grad": grad, "reg": reg_value, "margin": float(consts.margin)}
    options |= {"squared": squared, "batch_size": batch_size, "n_examples": n}
    weights = consts.class_weights
    options["class_weights"] = None if weights is None else weights.tolist()
    if frozen:  # stored only when set, so older checkpoints still match
        options["loss_options"] = [list(item) for item in frozen]
    state = _start(params, optimizer, key, options, resume_from, epochs)
    reg_array = jnp.asarray(reg_value, params["W"].dtype)
    if mesh is not None:  # replicate everything but the data
        placed = sharding.put((consts, reg_array, state.params, state.opt_state), mesh)
        consts, reg_array, params, opt_state = placed
        state = state._replace(params=params, opt_state=opt_state)
    static = Static(optimizer.update, loss, grad, bool(squared), frozen, mesh)
    run = functools.partial(run_epoch, reg=reg_array, data=data, consts=consts, static=static)
    words = key_words(key)

    def dispatch(epoch: int, params, opt_state):
        """Start ``epoch`` on the device (asynchronously): ``(epoch, params, opt_state,
        metrics)``, or ``None`` past the last epoch."""
        if epoch > epochs:
            return None
        if mesh is None:
            order = minibatches(words, epoch, n, batch_size)
        else:
            order = mesh_order(words, epoch, n, batch_size, mesh)
        return (epoch, *run(params, opt_state, order))

    writer = jax.process_index() == 0  # one checkpoint writer per run
    bar = _progress_bar(epochs, state.epoch) if progress else None
    try:
        pending = dispatch(state.epoch + 1, state.params, state.opt_state)
        while pending is not None:
            epoch, params, opt_state, metrics = pending
            # The next epoch runs on the device while this one is checked and recorded
            # (its batch order, the checkpoint and the progress bar are host work); it is
            # discarded if this one diverged.
            pending = dispatch(epoch + 1, params, opt_state)
            metrics = jax.device_get(metrics)
            if not metrics.pop("finite"):
                raise TrainingDiverged(epoch, state.params, state.history)
            history = _append(state.history, epoch, metrics)
            state = TrainState(params, opt_state, key, epoch, history)
            due = epoch % checkpoint_every == 0 or epoch == epochs
            if checkpoint is not None and writer and due:
                checkpoints.save(checkpoint, state, options=options)
            if bar is not None:
                bar.update()
                bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()})
    finally:
        if bar is not None:
            bar.close()
    return state.params, state.history

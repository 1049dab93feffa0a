r"""Minibatch training of the linear SVM (:mod:`svmjax.linear`) with any optax optimizer.

Every step differentiates :func:`svmjax.linear.objective` on one minibatch (so a faster
objective there is picked up here) and applies one optax update.

Minibatches. Epoch ``e`` (1-based) visits the examples in the order
``np.random.default_rng([*jax.random.key_data(key), e]).permutation(N)``, cut into
``ceil(N / batch_size)`` batches; the last one is padded (with example 0) and the padding
gets weight 0 through ``sample_weight``, so every example counts and none is dropped. The order is
drawn with NumPy on the host rather than with ``jax.random.permutation`` because XLA:CPU
sorts slowly: permuting 4000 indices costs 1.4 ms there, about 20 training steps, against
0.05 ms in NumPy. The order depends only on ``(key, e)``, so a resumed run sees the same
batches as an uninterrupted one.

Compilation. One jitted *epoch* function (a ``jax.lax.scan`` over the minibatches) is
called from a Python loop over epochs. Everything that varies between runs of the same
shapes (data, batch order, ``reg``, ``margin``, ``class_weights`` and the learning rate of
optimizers from :func:`make_optimizer`, which lives in the optimizer state) is a traced
argument, so a run compiles once and a second run with the same shapes and options compiles
nothing. The loop over epochs stays on the host because there is work between epochs: the
divergence check (an epoch with a non-finite objective, gradient or parameter raises
:class:`TrainingDiverged` *before* it is recorded or checkpointed), the checkpoint and the
progress bar. The same compiled epoch runs whether those are on or off, so checkpointing and
resuming never change the numbers. The price is one dispatch, one device-to-host copy and
one wait per epoch (a fraction of a millisecond). :func:`fit_grid` vmaps the same epoch
function over configurations.

Checkpoints are single ``.npz`` files (see :func:`save_checkpoint`), written to a temporary
file in the same directory and moved into place with ``os.replace``, so a crash mid-write
leaves the previous checkpoint intact, and read with ``allow_pickle=False``.

Devices. Without ``mesh`` everything runs where ``params`` live, as it always has. With a
``jax.sharding.Mesh`` (see :mod:`svmjax.sharding`), :func:`fit` is data-parallel: the
epoch function is the same, the data, parameters and optimizer state are replicated, each
minibatch of indices is split over the devices, so each device gathers and differentiates
its slice of the batch, and XLA's SPMD partitioner inserts the all-reduce of the gradient
(sharding constraints inside the step pin this layout). :func:`fit_grid` splits its
configuration axis over the devices instead. All placement goes through
:func:`svmjax.sharding.put`, which works the same for one process or many, so the code is
the same after ``jax.distributed.initialize()``. Layout never changes the maths, only the
summation order: results agree with one device to float rounding.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jax.typing import ArrayLike

from svmjax import linear, sharding
from svmjax.validation import validate

__all__ = [
    "DEFAULT_OPTIMIZER",
    "OPTIMIZERS",
    "SCHEDULES",
    "GridResult",
    "TrainState",
    "TrainingDiverged",
    "fit",
    "fit_grid",
    "load_checkpoint",
    "make_optimizer",
    "save_checkpoint",
]

Params = dict[str, jax.Array]
OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("constant", "cosine")
_FORMAT = "svmjax-checkpoint/1"


class TrainState(NamedTuple):
    """Everything needed to continue training; what a checkpoint holds.

    ``params`` and ``opt_state`` are pytrees of arrays, ``key`` is the typed base key,
    ``epoch`` the number of finished epochs and ``history`` a dict of NumPy arrays with one
    entry per finished epoch (as returned by :func:`fit`).
    """

    params: Params
    opt_state: optax.OptState
    key: jax.Array
    epoch: int
    history: dict[str, np.ndarray]


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


class GridResult(NamedTuple):
    """What :func:`fit_grid` returns; configuration ``k`` is ``configs[k] = (lr, reg, seed)``.

    ``params`` has leaves stacked ``[K, ...]``; ``history`` has ``[K, epochs]`` arrays (and
    ``"epoch"``, ``[epochs]``); ``best`` is the index of the best configuration.
    """

    params: Params
    history: dict[str, np.ndarray]
    configs: list[tuple[float, float, int]]
    best: int


# --------------------------------------------------------------------------------- optimizers

_FACTORIES = {
    "sgd": lambda learning_rate: optax.sgd(learning_rate),
    "momentum": lambda learning_rate: optax.sgd(learning_rate, momentum=0.9),
    "adam": lambda learning_rate: optax.adam(learning_rate),
}


def _build(name, learning_rate, schedule, decay_steps) -> optax.GradientTransformation:
    # inject_hyperparams keeps the learning rate in the optimizer state, not in the code.
    tx = optax.inject_hyperparams(_FACTORIES[name])(learning_rate=learning_rate)
    if schedule is None or schedule == "constant":
        return tx
    factor = optax.cosine_decay_schedule(1.0, decay_steps) if schedule == "cosine" else schedule
    return optax.chain(tx, optax.scale_by_schedule(factor))


@functools.cache
def _shared_update(name, schedule, decay_steps) -> Callable:
    """One ``update`` per (name, schedule, decay_steps): it reads the rate from the state."""
    return _build(name, 1.0, schedule, decay_steps).update


def make_optimizer(
    name: str,
    learning_rate: float,
    schedule: str | Callable | None = None,
    *,
    decay_steps: int | None = None,
) -> optax.GradientTransformation:
    """One of the common optimizers, with the learning rate held in its state.

    Args:
      name: ``"sgd"`` (plain), ``"momentum"`` (SGD with heavy-ball momentum 0.9) or
        ``"adam"`` (optax defaults).
      learning_rate: the base step size.
      schedule: ``None`` or ``"constant"`` (fixed step), ``"cosine"`` (``learning_rate``
        times a cosine decay from 1 to 0 over ``decay_steps`` steps), or a callable
        ``step -> factor`` (e.g. an optax schedule) that multiplies ``learning_rate``.
      decay_steps: length of the cosine decay in steps; required for ``"cosine"``.

    Returns:
      An optax ``GradientTransformation``. The learning rate is stored in the optimizer state
      (``optax.inject_hyperparams``), and optimizers with equal ``name``, ``schedule`` and
      ``decay_steps`` share one ``update`` function, so :func:`fit` compiles once for all
      learning rates and :func:`fit_grid` vmaps over them.

    Raises:
      ValueError: an unknown ``name`` or ``schedule`` (the valid ones are listed), or
        ``"cosine"`` without ``decay_steps >= 1``.

    Example:
      >>> tx = make_optimizer("sgd", 0.5)
      >>> params = {"w": jnp.array([1.0, 2.0])}
      >>> updates, _ = tx.update({"w": jnp.array([1.0, -1.0])}, tx.init(params))
      >>> updates["w"]
      Array([-0.5,  0.5], dtype=float32)
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    if isinstance(schedule, str) and schedule not in SCHEDULES:
        raise ValueError(
            f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}, None or "
            "a callable step -> factor"
        )
    if not (schedule is None or isinstance(schedule, str) or callable(schedule)):
        raise ValueError(f"schedule must be a name, None or a callable, got {schedule!r}")
    if schedule == "cosine" and (decay_steps is None or decay_steps < 1):
        raise ValueError(f"schedule='cosine' needs decay_steps >= 1, got {decay_steps}")
    init = _build(name, learning_rate, schedule, decay_steps).init
    return optax.GradientTransformationExtraArgs(init, _shared_update(name, schedule, decay_steps))


DEFAULT_OPTIMIZER = make_optimizer("sgd", 0.1)
"""What :func:`fit` uses when ``optimizer=None``: plain SGD with learning rate 0.1 (meant for
standardised features; on digits it beat momentum and Adam at 5-10 epochs)."""

# ---------------------------------------------------------------------------------- epochs


def _key_words(key: jax.Array) -> list[int]:
    return np.asarray(jax.random.key_data(key)).ravel().tolist()


def _minibatches(
    words: list[int], epoch: int, n: int, batch_size: int, width: int | None = None
) -> np.ndarray:
    """Row indices ``[ceil(n / batch_size), width]`` of one epoch, ``-1`` marking padding.

    Row ``r`` holds the batch ``r`` of :func:`fit`'s documented order in its first
    ``batch_size`` slots; the slots past ``n`` in the last batch, and the slots from
    ``batch_size`` to ``width`` (default ``batch_size``) in every batch, are ``-1``.
    """
    width = batch_size if width is None else width
    n_batches = -(-n // batch_size)
    order = np.full(n_batches * batch_size, -1, np.int32)
    order[:n] = np.random.default_rng([*words, epoch]).permutation(n)
    padded = np.full((n_batches, width), -1, np.int32)
    padded[:, :batch_size] = order.reshape(n_batches, batch_size)
    return padded


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _constrain(tree, mesh: Mesh | None, dim: int | None):
    """Pin every leaf of ``tree`` to be split along ``dim`` over ``mesh`` (``None``:
    replicated); a no-op without a mesh."""
    if mesh is None:
        return tree

    def one(x):
        spec = PartitionSpec() if dim is None else sharding.batch_spec(mesh, x.ndim, dim)
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    return jax.tree.map(one, tree)


def _accuracy(params: Params, X: jax.Array, y: jax.Array, mesh: Mesh | None = None) -> jax.Array:
    X, y = _constrain((X, y), mesh, 0)  # with a mesh, each device scores its rows
    return jnp.mean(linear.predict(params, X) == y)


def _epoch_fn(params, opt_state, order, reg, data, consts, *, update, loss, grad, squared, mesh):
    """One epoch: a scan of optimizer steps over the minibatch indices ``order``.

    With ``mesh``, each minibatch (a row of ``order``) is split over the devices and the
    parameters and optimizer state are replicated; XLA all-reduces the gradient.
    """
    X, y, X_val, y_val = data
    margin, class_weights = consts
    options = dict(loss=loss, reg=reg, margin=margin, squared=squared, grad=grad)

    def step(carry, order_row):
        params, opt_state = carry
        weight = (order_row >= 0).astype(X.dtype)  # padding slots (-1) get weight 0
        index = jnp.maximum(order_row, 0)
        X_b, y_b, weight = _constrain((X[index], y[index], weight), mesh, 0)
        value, g = jax.value_and_grad(linear.objective)(
            params, X_b, y_b, class_weights=class_weights, sample_weight=weight, **options
        )
        updates, opt_state = update(g, opt_state, params)
        params = optax.apply_updates(params, updates)
        params, opt_state = _constrain((params, opt_state), mesh, None)
        return (params, opt_state), (value * jnp.sum(weight), jnp.isfinite(value) & _all_finite(g))

    (params, opt_state), (values, finite) = jax.lax.scan(step, (params, opt_state), order)
    metrics = {
        "objective": jnp.sum(values) / X.shape[0],
        "train_accuracy": _accuracy(params, X, y, mesh),
        "finite": jnp.all(finite) & _all_finite(params),
    }
    if X_val is not None:
        metrics["val_accuracy"] = _accuracy(params, X_val, y_val, mesh)
    return params, opt_state, metrics


_STATIC = ("update", "loss", "grad", "squared", "mesh")
_epoch = jax.jit(_epoch_fn, static_argnames=_STATIC)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _grid_epoch(params, opt_state, orders, regs, alive, data, consts, *, mesh, **static):
    """``_epoch_fn`` vmapped over configurations; a configuration that diverged stays frozen.

    With ``mesh``, the configuration axis (leading axis of everything but ``data`` and
    ``consts``) is split over the devices; each device trains its configurations alone.
    """
    run = jax.vmap(
        functools.partial(_epoch_fn, mesh=None, **static), in_axes=(0, 0, 0, 0, None, None)
    )
    new_params, new_opt_state, metrics = run(params, opt_state, orders, regs, data, consts)
    alive = alive & metrics.pop("finite")

    def keep(new, old):
        return jnp.where(alive.reshape(alive.shape + (1,) * (new.ndim - 1)), new, old)

    params, opt_state = jax.tree.map(keep, (new_params, new_opt_state), (params, opt_state))
    metrics["objective"] = jnp.where(alive, metrics["objective"], jnp.nan)
    return _constrain((params, opt_state, alive, metrics), mesh, 0)


# ---------------------------------------------------------------------------------- checks


def _check_options(key, loss: str, grad: str, mesh: Mesh | None, **counts: int) -> None:
    if loss not in linear.LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(linear.LOSSES)}")
    if grad not in linear.GRADS:
        raise ValueError(f"unknown grad {grad!r}; choose one of {', '.join(linear.GRADS)}")
    is_key = isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    if not is_key or key.shape != ():
        raise TypeError(
            "key must be a single typed key from jax.random.key(seed) "
            "(wrap a raw uint32 key with jax.random.wrap_key_data)"
        )
    for name, value in counts.items():
        if not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if mesh is not None and not isinstance(mesh, Mesh):
        raise TypeError(
            "mesh must be a jax.sharding.Mesh (e.g. svmjax.sharding.data_mesh()) or None, "
            f"got {type(mesh).__name__}"
        )


def _scalar(name: str, value, *, positive: bool) -> float:
    """``value`` as a Python float, checked: finite and ``> 0`` (``positive``) or ``>= 0``."""
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {np.shape(value)}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(number) or (number <= 0 if positive else number < 0):
        raise ValueError(
            f"{name} must be a finite number {'>' if positive else '>='} 0, got {value}"
        )
    return number


def _host(x, mesh: Mesh | None):
    """``x``, gathered to every process first when it is a global array spanning others."""
    if mesh is not None and isinstance(x, jax.Array) and not x.is_fully_addressable:
        return sharding.put(x, mesh)
    return x


def _features(X, dtype):
    """``X`` with integer or boolean features converted to ``dtype``; others unchanged."""
    X = X if isinstance(X, jax.Array | np.ndarray) else np.asarray(X)
    if np.issubdtype(X.dtype, np.integer) or X.dtype == np.bool_:
        return X.astype(dtype)
    return X


def _data(params: Params, X, y, validation, mesh: Mesh | None = None) -> tuple:
    """``(X, y, X_val, y_val)`` checked, X cast to the dtype of W (``None`` without validation);
    with ``mesh``, replicated on it."""
    W = params["W"]

    def arrays(X, y, name):
        X = _features(_host(X, mesh), W.dtype)
        if X.ndim != 2 or X.shape[1] != W.shape[0]:
            raise ValueError(f"{name} must have shape [N, {W.shape[0]}] to match W, got {X.shape}")
        X, y = validate(X, _host(y, mesh), W.shape[1], name=name)
        X, y = X.astype(W.dtype), y.astype(jnp.int32)
        return (X, y) if mesh is None else (sharding.put(X, mesh), sharding.put(y, mesh))

    val = (None, None) if validation is None else arrays(*validation, "X_val")
    return (*arrays(X, y, "X"), *val)


def _consts(params: Params, margin, class_weights) -> tuple:
    """``(margin, class_weights)`` checked and as arrays of the dtype of W."""
    dtype, n_classes = params["W"].dtype, params["W"].shape[1]
    margin = jnp.asarray(_scalar("margin", margin, positive=True), dtype)
    weights = None
    if class_weights is not None:
        w = np.asarray(class_weights)
        if w.shape != (n_classes,):
            raise ValueError(
                f"class_weights must have shape ({n_classes},) (one weight per class), "
                f"got shape {w.shape}"
            )
        if not np.issubdtype(w.dtype, np.number) or np.iscomplexobj(w):
            raise TypeError(f"class_weights must be real numbers, got dtype {w.dtype}")
        bad = np.flatnonzero(~(np.isfinite(w) & (w >= 0)))
        if bad.size:
            raise ValueError(
                f"class_weights must be finite and >= 0, got class_weights[{bad[0]}] = {w[bad[0]]}"
            )
        weights = jnp.asarray(w, dtype)
    return margin, weights


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
      key: a typed key (``jax.random.key``). It alone decides the batch order, so the same
        key gives bit-identical parameters on the same devices (one device, or the same
        mesh).
      loss, grad, reg, margin, squared, class_weights: as in :func:`svmjax.linear.objective`,
        checked eagerly: ``reg`` finite and ``>= 0``; ``margin`` finite and ``> 0`` (with a
        margin ``<= 0`` the zero model ``W = 0`` already minimises the objective, so
        training could learn nothing; the loss functions themselves accept any margin);
        ``class_weights`` of shape ``[C]``, finite and ``>= 0``.
      optimizer: any optax transformation; ``None`` means :data:`DEFAULT_OPTIMIZER` (plain
        SGD, learning rate 0.1). Optimizers from :func:`make_optimizer` keep the learning
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
        data-parallel training: every minibatch is split over all the mesh's devices (a
        batch is padded with weight-0 slots to a multiple of ``mesh.size``), the data,
        parameters and optimizer state are replicated, and XLA all-reduces the gradient.
        The batch order and the maths are those of one device; the numbers agree with a
        one-device run to float rounding (the gradient is summed in another order), and
        bit for bit with another run on the same mesh. ``X``, ``y`` may be host arrays
        (the same on every process) or global ``jax.Array`` s, e.g. assembled from
        per-process shards with ``jax.make_array_from_process_local_data``. ``None``
        (default): the devices of ``params``, unchanged.

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
    _check_options(key, loss, grad, mesh, **counts)
    mesh = None if mesh is None else sharding.auto_axes(mesh)
    data, consts = _data(params, X, y, validation, mesh), _consts(params, margin, class_weights)
    n = data[0].shape[0]
    batch_size = min(batch_size, n)
    optimizer = DEFAULT_OPTIMIZER if optimizer is None else optimizer
    reg = jnp.asarray(_scalar("reg", reg, positive=False), params["W"].dtype)
    options = {"loss": loss, "grad": grad, "reg": float(reg), "margin": float(consts[0])}
    options |= {"squared": squared, "batch_size": batch_size, "n_examples": n}
    options["class_weights"] = None if consts[1] is None else consts[1].tolist()
    state = TrainState(params, optimizer.init(params), key, 0, {})
    if resume_from is not None:
        state = load_checkpoint(resume_from, state, options=options)
        if _key_words(state.key) != _key_words(key):
            raise ValueError(f"key differs from the one checkpoint {resume_from} was written with")
        if state.epoch > epochs:
            raise ValueError(f"checkpoint {resume_from} is at epoch {state.epoch} > {epochs=}")
    width = batch_size
    if mesh is not None:  # replicate everything but the batch; pad batches to split evenly
        consts, reg, params, opt_state = sharding.put(
            (consts, reg, state.params, state.opt_state), mesh
        )
        state = state._replace(params=params, opt_state=opt_state)
        width = -(-batch_size // mesh.size) * mesh.size
    static = dict(update=optimizer.update, loss=loss, grad=grad, squared=squared, mesh=mesh)
    run = functools.partial(_epoch, reg=reg, data=data, consts=consts, **static)
    words = _key_words(key)
    writer = checkpoint is not None and jax.process_index() == 0  # one writer per run
    bar = _progress_bar(epochs, state.epoch) if progress else None
    try:
        for epoch in range(state.epoch + 1, epochs + 1):
            order = _minibatches(words, epoch, n, batch_size, width)
            if mesh is not None:
                order = sharding.put(order, mesh, sharding.batch_spec(mesh, 2, 1))
            params, opt_state, metrics = run(state.params, state.opt_state, order)
            metrics = jax.device_get(metrics)
            if not metrics.pop("finite"):
                raise TrainingDiverged(epoch, state.params, state.history)
            state = TrainState(
                params, opt_state, key, epoch, _append(state.history, epoch, metrics)
            )
            if writer and (epoch % checkpoint_every == 0 or epoch == epochs):
                save_checkpoint(checkpoint, state, options=options)
            if bar is not None:
                bar.update()
                bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()})
    finally:
        if bar is not None:
            bar.close()
    return state.params, state.history


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
    mesh: Mesh | None = None,
) -> GridResult:
    """Train every configuration in ``learning_rates × regs × seeds`` at once (``jax.vmap``).

    All configurations start from ``params``; the seed changes only the batch order.
    Configuration ``(lr, reg, seed)`` is :func:`fit` with ``reg=reg``,
    ``key=jax.random.fold_in(key, seed)`` and ``optimizer=make_optimizer(optimizer, lr,
    schedule)``, where ``"cosine"`` decays over the whole run. It agrees with that run to
    float rounding, not bit for bit: the vmapped code may sum in another order. A
    configuration that diverges is frozen at its last finite parameters, its ``objective``
    is NaN from then on, and it is never ``best``. The loop over epochs never waits for the
    device, and one compilation serves the whole grid.

    Args:
      params: initial ``{"W": [D, C], "b": [C]}``, shared by all configurations.
      learning_rates, regs, seeds: the grid axes, ``K`` configurations in all, ordered as
        ``itertools.product(learning_rates, regs, seeds)``.
      optimizer, schedule: as for :func:`make_optimizer`.
      X, y, key, validation, epochs, batch_size, loss, grad, margin, squared,
        class_weights: as for :func:`fit`. Learning rates must be finite and ``> 0``,
        regs finite and ``>= 0``.
      mesh: a ``jax.sharding.Mesh`` to split the *configurations* over its devices (the
        data is replicated; each device trains its configurations, no collectives in the
        loop). ``K`` is padded to a multiple of ``mesh.size`` with copies of the last
        configuration, which are dropped from the result. Results agree with the run
        without a mesh to float rounding; ``params`` come back replicated.

    Returns:
      A :class:`GridResult`. ``best`` has the highest final ``val_accuracy`` (ties: the
      lowest final objective) or, without ``validation``, the lowest final objective.

    Raises:
      ValueError, TypeError: as :func:`fit` and :func:`make_optimizer`; an empty grid axis.
      FloatingPointError: every configuration diverged.

    Example:
      >>> X = jax.random.normal(jax.random.key(0), (40, 3))
      >>> y = (X[:, 0] > 0).astype(jnp.int32)
      >>> grid = fit_grid(linear.init(jax.random.key(1), 3, 2), X, y, key=jax.random.key(2),
      ...                 learning_rates=(0.01, 0.1), regs=(0.0, 1e-3), epochs=2)
      >>> grid.params["W"].shape, grid.history["objective"].shape, grid.configs[1]
      ((4, 3, 2), (4, 2), (0.01, 0.001, 0))
    """
    _check_options(key, loss, grad, mesh, epochs=epochs, batch_size=batch_size)
    mesh = None if mesh is None else sharding.auto_axes(mesh)
    data, consts = _data(params, X, y, validation, mesh), _consts(params, margin, class_weights)
    for lr in learning_rates:
        _scalar("learning rate", lr, positive=True)
    for reg in regs:
        _scalar("reg", reg, positive=False)
    grid = itertools.product(learning_rates, regs, seeds)
    configs = [(float(lr), float(reg), int(seed)) for lr, reg, seed in grid]
    if not configs:
        raise ValueError("learning_rates, regs and seeds must each be non-empty")
    n, k = data[0].shape[0], len(configs)
    # With a mesh, pad the configuration axis to a multiple of the devices with copies of the
    # last configuration; they are trained and then dropped.
    padded = configs + [configs[-1]] * (0 if mesh is None else -k % mesh.size)
    batch_size = min(batch_size, n)
    decay_steps = epochs * -(-n // batch_size) if schedule == "cosine" else None
    txs = [make_optimizer(optimizer, lr, schedule, decay_steps=decay_steps) for lr, _, _ in padded]
    stacked = jax.tree.map(lambda p: jnp.broadcast_to(p, (len(padded), *p.shape)), params)
    opt_state = jax.tree.map(lambda *s: jnp.stack(s), *[tx.init(params) for tx in txs])
    regs_k = jnp.array([reg for _, reg, _ in padded], params["W"].dtype)
    words = [_key_words(jax.random.fold_in(key, seed)) for _, _, seed in padded]
    static = dict(update=txs[0].update, loss=loss, grad=grad, squared=squared, mesh=mesh)
    alive, rows = jnp.ones(len(padded), bool), []

    def split(tree):  # configurations over the devices
        return jax.tree.map(
            lambda x: sharding.put(x, mesh, sharding.batch_spec(mesh, x.ndim)), tree
        )

    if mesh is not None:
        stacked, opt_state, regs_k, alive = split((stacked, opt_state, regs_k, alive))
        consts = sharding.put(consts, mesh)
    for epoch in range(1, epochs + 1):
        orders = np.stack([_minibatches(w, epoch, n, batch_size) for w in words])
        if mesh is not None:
            orders = split(orders)
        stacked, opt_state, alive, metrics = _grid_epoch(
            stacked, opt_state, orders, regs_k, alive, data, consts, **static
        )
        rows.append(metrics)
    if mesh is not None:  # gather to every process, then drop the padding configurations
        stacked, rows, alive = sharding.put((stacked, rows, alive), mesh)
        stacked = jax.tree.map(lambda x: x[:k], stacked)
    rows, alive = jax.device_get((rows, alive))
    rows, alive = jax.tree.map(lambda x: x[:k], rows), alive[:k]
    if not alive.any():
        raise FloatingPointError("every configuration diverged; try smaller learning rates")
    history = {name: np.stack([row[name] for row in rows], axis=1) for name in rows[0]}
    history["epoch"] = np.arange(1, epochs + 1)
    final = history["objective"][:, -1]
    score = history["val_accuracy"][:, -1] if validation is not None else -final
    best = int(np.lexsort((final, -np.where(alive, score, -np.inf)))[0])
    return GridResult(stacked, history, configs, best)


# ----------------------------------------------------------------------------- checkpoints


def _leaves(state: TrainState) -> tuple[list[str], list[np.ndarray], str]:
    """Names, values and tree structure of the leaves of ``(params, opt_state)``."""
    flat, treedef = jax.tree_util.tree_flatten_with_path((state.params, state.opt_state))
    names = [jax.tree_util.keystr(path) for path, _ in flat]
    return names, [np.asarray(leaf) for _, leaf in flat], str(treedef)


def save_checkpoint(
    path: str | os.PathLike, state: TrainState, *, options: dict[str, Any] | None = None
) -> None:
    """Write ``state`` to the file ``path`` atomically (temporary file + ``os.replace``).

    The ``.npz`` file holds the leaves of ``(params, opt_state)`` as ``leaf_0, leaf_1, ...``,
    ``jax.random.key_data(state.key)`` as ``key``, the history as ``history_<name>``, and
    ``manifest``: a JSON string with the format, epoch, tree structure, leaf names, shapes
    and dtypes, key implementation, history names and ``options`` (any JSON-serialisable
    dict; :func:`fit` stores its options there). Nothing is pickled. Missing directories
    are created; a failure while writing leaves any previous file at ``path`` untouched
    (a process killed mid-write may leave a ``<name>.*.tmp`` file next to it, never read).

    Example:
      >>> import os, tempfile
      >>> state = TrainState({"w": jnp.ones(2)}, (), jax.random.key(0), 3, {})
      >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.npz")
      >>> save_checkpoint(path, state)
      >>> load_checkpoint(path, state._replace(epoch=0)).epoch
      3
    """
    path = os.path.abspath(os.fspath(path))
    names, leaves, treedef = _leaves(state)
    manifest = {"format": _FORMAT, "epoch": int(state.epoch), "treedef": treedef}
    manifest |= {"leaves": names, "shapes": [x.shape for x in leaves]}
    manifest |= {"dtypes": [str(x.dtype) for x in leaves], "history": sorted(state.history)}
    manifest |= {"key_impl": str(jax.random.key_impl(state.key)), "options": options}
    arrays = {f"leaf_{i}": x for i, x in enumerate(leaves)}
    arrays |= {f"history_{name}": np.asarray(v) for name, v in state.history.items()}
    arrays["key"] = np.asarray(jax.random.key_data(state.key))
    arrays["manifest"] = np.array(json.dumps(manifest))
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    _sync_directory(directory)


def _sync_directory(directory: str) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(
    path: str | os.PathLike, template: TrainState, *, options: dict[str, Any] | None = None
) -> TrainState:
    """Read a checkpoint written by :func:`save_checkpoint` into the structure of ``template``.

    ``template`` is a freshly initialised state, e.g. ``TrainState(params,
    optimizer.init(params), key, 0, {})``. The file's tree structure, leaf shapes and dtypes
    and key implementation must equal the template's (so any optax optimizer whose state is
    a pytree of arrays works); with ``options``, the stored options must equal them too.

    Returns:
      The stored :class:`TrainState` (params, optimizer state, key, epoch, history).

    Raises:
      FileNotFoundError: no file at ``path``.
      ValueError: naming the file and the problem: a file that cannot be read as a
        checkpoint (truncated, corrupt, not an ``.npz``), one that lacks an array, or the
        first mismatch, e.g. ``shape of [0]['W'] is (64, 10), expected (32, 10)``.

    Example: see :func:`save_checkpoint`.
    """
    try:
        with open(path, "rb") as file:
            loaded = np.load(file, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("an .npy file, not an .npz archive")
            with loaded:
                arrays = dict(loaded.items())
        manifest = json.loads(str(arrays.pop("manifest", "{}")))
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(
            f"checkpoint {path} cannot be read (truncated or not a checkpoint): {error}"
        ) from error
    except (NotImplementedError, RuntimeError) as error:  # zipfile on a corrupt flag field
        raise ValueError(
            f"checkpoint {path} cannot be read (corrupt zip entry): {error}"
        ) from error
    if not isinstance(manifest, dict):
        manifest = {}
    names, leaves, treedef = _leaves(template)
    shapes, dtypes = manifest.get("shapes", []), manifest.get("dtypes", [])
    per_leaf = list(zip(names, shapes, dtypes, leaves, strict=False))  # lengths checked below
    stored = manifest.get("options") or {}
    checks = [
        ("format", manifest.get("format"), _FORMAT),
        ("tree structure", manifest.get("treedef"), treedef),
        ("number of leaves", len(shapes), len(leaves)),
        *[(f"shape of {name}", tuple(s), x.shape) for name, s, _, x in per_leaf],
        *[(f"dtype of {name}", d, str(x.dtype)) for name, _, d, x in per_leaf],
        ("key implementation", manifest.get("key_impl"), str(jax.random.key_impl(template.key))),
        *[(f"option {k!r}", stored.get(k), v) for k, v in (options or {}).items()],
    ]
    for what, got, want in checks:
        if got != want:
            raise ValueError(f"checkpoint {path} does not match: {what} is {got}, expected {want}")
    names = [f"leaf_{i}" for i in range(len(leaves))] + ["key"]
    names += [f"history_{name}" for name in manifest.get("history", [])]
    missing = [name for name in names if name not in arrays]
    if missing:
        raise ValueError(f"checkpoint {path} is incomplete: no {', '.join(missing)}")
    bad = [i for i, x in enumerate(leaves) if arrays[f"leaf_{i}"].shape != x.shape]
    if bad:
        raise ValueError(f"checkpoint {path} is inconsistent: leaf_{bad[0]} has the wrong shape")
    restored = [jnp.asarray(arrays[f"leaf_{i}"], x.dtype) for i, x in enumerate(leaves)]
    structure = jax.tree.structure((template.params, template.opt_state))
    params, opt_state = jax.tree.unflatten(structure, restored)
    key = jax.random.wrap_key_data(arrays["key"], impl=jax.random.key_impl(template.key))
    history = {name: arrays[f"history_{name}"] for name in manifest["history"]}
    return TrainState(params, opt_state, key, manifest["epoch"], history)

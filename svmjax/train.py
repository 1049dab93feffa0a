r"""Minibatch training of the linear SVM (:mod:`svmjax.linear`) with any optax optimizer.

Every step differentiates :func:`svmjax.linear.objective` on one minibatch (so a faster
objective there is picked up here) and applies one optax update.

Minibatches. Epoch ``e`` (1-based) visits the examples in the order
``np.random.default_rng([*jax.random.key_data(key), e]).permutation(N)``, cut into
``ceil(N / batch_size)`` batches; the last one is padded with index 0 and the padding gets
weight 0 through ``sample_weight``, so every example counts and none is dropped. The order is
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
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import tempfile
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from svmjax import linear
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
_GRADS = ("analytic", "autodiff")
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


def _minibatches(words: list[int], epoch: int, n: int, batch_size: int) -> np.ndarray:
    """Row indices ``[ceil(n / batch_size), batch_size]`` of one epoch; the tail is padding."""
    n_batches = -(-n // batch_size)
    order = np.zeros(n_batches * batch_size, np.int32)
    order[:n] = np.random.default_rng([*words, epoch]).permutation(n)
    return order.reshape(n_batches, batch_size)


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _accuracy(params: Params, X: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(linear.predict(params, X) == y)


def _epoch_fn(params, opt_state, order, reg, data, consts, *, update, loss, grad, squared):
    """One epoch: a scan of optimizer steps over the minibatch indices ``order``."""
    X, y, X_val, y_val = data
    margin, class_weights = consts
    mask = (jnp.arange(order.size) < X.shape[0]).astype(X.dtype).reshape(order.shape)
    options = dict(loss=loss, reg=reg, margin=margin, squared=squared, grad=grad)

    def step(carry, batch):
        params, opt_state = carry
        index, weight = batch
        value, g = jax.value_and_grad(linear.objective)(
            params, X[index], y[index], class_weights=class_weights, sample_weight=weight, **options
        )
        updates, opt_state = update(g, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state), (value * jnp.sum(weight), jnp.isfinite(value) & _all_finite(g))

    (params, opt_state), (values, finite) = jax.lax.scan(step, (params, opt_state), (order, mask))
    metrics = {
        "objective": jnp.sum(values) / X.shape[0],
        "train_accuracy": _accuracy(params, X, y),
        "finite": jnp.all(finite) & _all_finite(params),
    }
    if X_val is not None:
        metrics["val_accuracy"] = _accuracy(params, X_val, y_val)
    return params, opt_state, metrics


_STATIC = ("update", "loss", "grad", "squared")
_epoch = jax.jit(_epoch_fn, static_argnames=_STATIC)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _grid_epoch(params, opt_state, orders, regs, alive, data, consts, **static):
    """``_epoch_fn`` vmapped over configurations; a configuration that diverged stays frozen."""
    run = jax.vmap(functools.partial(_epoch_fn, **static), in_axes=(0, 0, 0, 0, None, None))
    new_params, new_opt_state, metrics = run(params, opt_state, orders, regs, data, consts)
    alive = alive & metrics.pop("finite")

    def keep(new, old):
        return jnp.where(alive.reshape(alive.shape + (1,) * (new.ndim - 1)), new, old)

    params, opt_state = jax.tree.map(keep, (new_params, new_opt_state), (params, opt_state))
    metrics["objective"] = jnp.where(alive, metrics["objective"], jnp.nan)
    return params, opt_state, alive, metrics


# ---------------------------------------------------------------------------------- checks


def _check_options(key, loss: str, grad: str, **counts: int) -> None:
    if loss not in linear.LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(linear.LOSSES)}")
    if grad not in _GRADS:
        raise ValueError(f"unknown grad {grad!r}; choose one of {', '.join(_GRADS)}")
    is_key = isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    if not is_key or key.shape != ():
        raise TypeError(
            "key must be a single typed key from jax.random.key(seed) "
            "(wrap a raw uint32 key with jax.random.wrap_key_data)"
        )
    for name, value in counts.items():
        if not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _data(params: Params, X, y, validation) -> tuple:
    """``(X, y, X_val, y_val)`` checked, X cast to the dtype of W (``None`` without validation)."""
    W = params["W"]

    def arrays(X, y, name):
        X, y = validate(X, y, n_classes=W.shape[1], name=name)
        if X.ndim != 2 or X.shape[1] != W.shape[0]:
            raise ValueError(f"{name} must have shape [N, {W.shape[0]}] to match W, got {X.shape}")
        return X.astype(W.dtype), y.astype(jnp.int32)

    val = (None, None) if validation is None else arrays(*validation, "X_val")
    return (*arrays(X, y, "X"), *val)


def _consts(params: Params, margin, class_weights) -> tuple:
    dtype = params["W"].dtype
    weights = None if class_weights is None else jnp.asarray(class_weights, dtype)
    return jnp.asarray(margin, dtype), weights


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
) -> tuple[Params, dict[str, np.ndarray]]:
    """Train the linear SVM ``{"W": [D, C], "b": [C]}`` by minibatch optimisation.

    Each step descends on :func:`svmjax.linear.objective` of one shuffled minibatch; see the
    module docstring for the batch order, the padded last batch and the compile-once design.

    Args:
      params: initial parameters, e.g. from :func:`svmjax.linear.init`.
      X, y: float features ``[N, D]`` (cast to the dtype of ``W``) and integer labels ``[N]``
        in ``[0, C)``.
      key: a typed key (``jax.random.key``). It alone decides the batch order, so the same
        key gives bit-identical parameters on one device.
      loss, grad, reg, margin, squared, class_weights: as in :func:`svmjax.linear.objective`.
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
        ``resume_from``.

    Returns:
      ``(params, history)``. ``history`` maps ``"epoch"`` (1-based), ``"objective"`` (the
      epoch's minibatch objectives, each taken before its step, averaged with weights = real
      examples per batch), ``"train_accuracy"`` (end-of-epoch parameters on all of ``X``)
      and with ``validation`` ``"val_accuracy"`` to NumPy arrays ``[epochs]``.

    Raises:
      ValueError, TypeError: a bad option, key or input (checked before any work), or a
        checkpoint that does not match.
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
    _check_options(key, loss, grad, **counts)
    data, consts = _data(params, X, y, validation), _consts(params, margin, class_weights)
    n = data[0].shape[0]
    batch_size = min(batch_size, n)
    optimizer = DEFAULT_OPTIMIZER if optimizer is None else optimizer
    reg = jnp.asarray(reg, params["W"].dtype)
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
    static = dict(update=optimizer.update, loss=loss, grad=grad, squared=squared)
    run = functools.partial(_epoch, reg=reg, data=data, consts=consts, **static)
    words = _key_words(key)
    bar = _progress_bar(epochs, state.epoch) if progress else None
    try:
        for epoch in range(state.epoch + 1, epochs + 1):
            order = _minibatches(words, epoch, n, batch_size)
            params, opt_state, metrics = run(state.params, state.opt_state, order)
            metrics = jax.device_get(metrics)
            if not metrics.pop("finite"):
                raise TrainingDiverged(epoch, state.params, state.history)
            state = TrainState(
                params, opt_state, key, epoch, _append(state.history, epoch, metrics)
            )
            if checkpoint is not None and (epoch % checkpoint_every == 0 or epoch == epochs):
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
        class_weights: as for :func:`fit`.

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
    _check_options(key, loss, grad, epochs=epochs, batch_size=batch_size)
    data, consts = _data(params, X, y, validation), _consts(params, margin, class_weights)
    grid = itertools.product(learning_rates, regs, seeds)
    configs = [(float(lr), float(reg), int(seed)) for lr, reg, seed in grid]
    if not configs:
        raise ValueError("learning_rates, regs and seeds must each be non-empty")
    n, k = data[0].shape[0], len(configs)
    batch_size = min(batch_size, n)
    decay_steps = epochs * -(-n // batch_size) if schedule == "cosine" else None
    txs = [make_optimizer(optimizer, lr, schedule, decay_steps=decay_steps) for lr, _, _ in configs]
    stacked = jax.tree.map(lambda p: jnp.broadcast_to(p, (k, *p.shape)), params)
    opt_state = jax.tree.map(lambda *s: jnp.stack(s), *[tx.init(params) for tx in txs])
    regs_k = jnp.array([reg for _, reg, _ in configs], params["W"].dtype)
    words = [_key_words(jax.random.fold_in(key, seed)) for _, _, seed in configs]
    static = dict(update=txs[0].update, loss=loss, grad=grad, squared=squared)
    alive, rows = jnp.ones(k, bool), []
    for epoch in range(1, epochs + 1):
        orders = np.stack([_minibatches(w, epoch, n, batch_size) for w in words])
        stacked, opt_state, alive, metrics = _grid_epoch(
            stacked, opt_state, orders, regs_k, alive, data, consts, **static
        )
        rows.append(metrics)
    rows, alive = jax.device_get((rows, alive))
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
    are created; a failure while writing leaves any previous file at ``path`` untouched.

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
      ValueError: naming the file and the first mismatch, e.g. ``shape of [0]['W'] is
        (64, 10), expected (32, 10)``.

    Example: see :func:`save_checkpoint`.
    """
    with np.load(path, allow_pickle=False) as f:
        arrays = dict(f.items())
    manifest = json.loads(str(arrays.pop("manifest", "{}")))
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
    restored = [jnp.asarray(arrays[f"leaf_{i}"], x.dtype) for i, x in enumerate(leaves)]
    structure = jax.tree.structure((template.params, template.opt_state))
    params, opt_state = jax.tree.unflatten(structure, restored)
    key = jax.random.wrap_key_data(arrays["key"], impl=jax.random.key_impl(template.key))
    history = {name: arrays[f"history_{name}"] for name in manifest["history"]}
    return TrainState(params, opt_state, key, manifest["epoch"], history)

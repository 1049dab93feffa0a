r"""Minibatch training of the linear SVM (:mod:`svmjax.linear`) with any optax optimizer.

:func:`fit` runs epochs of optax steps, each differentiating
:func:`svmjax.linear.objective` on one shuffled minibatch (the order of
:mod:`svmjax.batches`, drawn from the key alone). One compiled epoch (a ``jax.lax.scan``
over the minibatches) serves every run of the same shapes and options, whatever the data,
key, ``reg``, ``margin``, class weights or the learning rate of an optimizer from
:func:`svmjax.optim.make_optimizer`. Between epochs the host checks for divergence (a
non-finite objective, gradient or parameter raises :class:`TrainingDiverged` before the
epoch is recorded or checkpointed), writes the checkpoint (:mod:`svmjax.checkpoint`) and
updates the progress bar, while the next epoch already runs on the device. Checkpointing
and resuming never change the numbers.

A loss registered with a sum-to-zero constraint (:mod:`svmjax.registry`) trains by
projected steps onto :math:`\sum_c w_c = 0,\ \sum_c b_c = 0`
(:func:`svmjax.linear.project_sum_to_zero`).

With a ``jax.sharding.Mesh`` (``mesh=``), :func:`fit` is data-parallel over rows: each
device holds its rows of ``X`` (:func:`svmjax.sharding.shard_rows`) and draws its part of
every batch from them; parameters and optimizer state are replicated, and XLA all-reduces
the gradient once per step. :func:`svmjax.grid.fit_grid` trains many configurations at once.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jax.typing import ArrayLike

from svmjax import _checks as checks
from svmjax import checkpoint as checkpoints
from svmjax import linear, registry, sharding
from svmjax._epoch import Static, check_options, check_top_k, metric_names, run_epoch
from svmjax._inputs import prepare_consts, prepare_data, shard_data
from svmjax.batches import key_words, mesh_order, minibatches
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
    top_k: int | Sequence[int] = (),
    mesh: Mesh | None = None,
) -> tuple[Params, dict[str, np.ndarray]]:
    r"""Train the linear SVM ``{"W": [D, C], "b": [C]}`` by minibatch optimisation.

    Each step descends on :func:`svmjax.linear.objective` of one shuffled minibatch; see the
    module docstring for the compile-once design and :mod:`svmjax.batches` for the batch
    order and the padded last batch.

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
      top_k: an int or a sequence of ints, each in ``[1, C]``: for each ``k`` the history
        also records the top-k accuracy, on the same data and parameters as the accuracy
        (:func:`svmjax.metrics.top_k_accuracy`: the share of examples whose true class is
        among the ``k`` highest scores, ties to the lower class index,
        :math:`\frac1N \sum_i 1(\#\{c : s_{ic} > s_{iy_i}\} + \#\{c < y_i : s_{ic} =
        s_{iy_i}\} < k)`). Default: none.
      optimizer: any optax transformation; ``None`` means
        :data:`svmjax.optim.DEFAULT_OPTIMIZER` (plain SGD, learning rate 0.1). Optimizers
        from :func:`svmjax.optim.make_optimizer` keep the learning
        rate in their state, so a new learning rate reuses the compiled code; any other
        optimizer object is compiled for anew.
      epochs: total number of epochs, also when resuming.
      batch_size: examples per step (at most ``N``).
      validation: optional ``(X_val, y_val)``, scored after every epoch.
      progress: show a tqdm progress bar (needs the ``progress`` extra).
      resume_from: a checkpoint file written by ``fit``: training continues after its
        epoch, from its parameters, optimizer state (learning rate included) and history,
        and ends bit-identical to an uninterrupted run on the same devices. The structure
        of ``params``, ``key``, the options and ``N`` must match the checkpoint's. It holds
        plain arrays, so it resumes on another mesh too, whose later epochs follow that
        mesh's batch order.
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
      examples per batch), ``"train_accuracy"`` (end-of-epoch parameters on all of ``X``),
      ``"train_top{k}_accuracy"`` for each ``k`` of ``top_k`` (e.g. ``"train_top5_accuracy"``)
      and with ``validation`` ``"val_accuracy"`` and ``"val_top{k}_accuracy"`` to NumPy
      arrays ``[epochs]``.

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
        data = prepare_data(params, X, y, validation_data=validation, batch_size=batch_size)
        n = data.X.shape[0]
    else:
        data, n = shard_data(params, X, y, validation, mesh, batch_size=batch_size)
    consts = prepare_consts(params, margin, class_weights)
    frozen = registry.loss_options(loss, loss_options)
    top_k = check_top_k(top_k, params["W"].shape[1])
    if registry.get(loss).constraint == "sum_to_zero":
        params = linear.project_sum_to_zero(params)
    batch_size = min(batch_size, n)
    optimizer = DEFAULT_OPTIMIZER if optimizer is None else optimizer
    reg_value = checks.scalar("reg", reg, positive=False)
    options = {"loss": loss, "grad": grad, "reg": reg_value, "margin": float(consts.margin)}
    options |= {"squared": squared, "batch_size": batch_size, "n_examples": n}
    weights = consts.class_weights
    options["class_weights"] = None if weights is None else weights.tolist()
    if frozen:  # stored only when set, so checkpoints without loss options still match
        options["loss_options"] = [list(item) for item in frozen]
    state = _start(params, optimizer, key, options, resume_from, epochs)
    recorded = metric_names("train", top_k) + (metric_names("val", top_k) if validation else [])
    if state.history and set(state.history) != {"epoch", "objective", *recorded}:
        raise ValueError(
            f"checkpoint {resume_from} records {sorted(state.history)}, this run "
            f"{sorted(['epoch', 'objective', *recorded])}: resume with the same validation "
            "and top_k"
        )
    reg_array = jnp.asarray(reg_value, params["W"].dtype)
    if mesh is not None:  # replicate everything but the data
        placed = sharding.put((consts, reg_array, state.params, state.opt_state), mesh)
        consts, reg_array, params, opt_state = placed
        state = state._replace(params=params, opt_state=opt_state)
    static = Static(optimizer.update, loss, grad, bool(squared), frozen, mesh, top_k)
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

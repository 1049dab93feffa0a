"""Optimizers for :func:`svmjax.train.fit` and :func:`svmjax.grid.fit_grid`, by name.

Any optax ``GradientTransformation`` works with :func:`svmjax.train.fit`; the ones made
here keep the learning rate in the optimizer state (``optax.inject_hyperparams``), so one
compiled training step serves every learning rate and :func:`svmjax.grid.fit_grid` can
vmap over learning rates.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import optax

__all__ = ["DEFAULT_OPTIMIZER", "OPTIMIZERS", "SCHEDULES", "make_optimizer"]

OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("constant", "cosine")

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
      ``decay_steps`` share one ``update`` function, so :func:`svmjax.train.fit` compiles
      once for all learning rates and :func:`svmjax.grid.fit_grid` vmaps over them.

    Raises:
      ValueError: an unknown ``name`` or ``schedule`` (the valid ones are listed), or
        ``"cosine"`` without ``decay_steps >= 1``.

    Example:
      >>> import jax.numpy as jnp
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
"""What :func:`svmjax.train.fit` uses when ``optimizer=None``: plain SGD with learning rate
0.1, meant for standardised features."""

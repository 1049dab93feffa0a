"""svmjax: multiclass SVM (hinge-family) losses in JAX, with analytic gradients.

Modules, one concern each (modules whose name starts with ``_`` are internal):

* :mod:`svmjax.losses` — pure ``jnp`` definitions (``jax.grad`` differentiates them);
* :mod:`svmjax.analytic` — the same losses with hand-written ``custom_vjp`` gradients;
* :mod:`svmjax.registry` — the one list of loss names and what each supports;
* :mod:`svmjax.linear` — the linear model ``{"W", "b"}`` and its regularised objective;
* :mod:`svmjax.fused` — the fast analytic objective (one pass over ``X``, bfloat16 ``X``);
* :mod:`svmjax.optim` — optimizers by name, learning rate in the state;
* :mod:`svmjax.train` — optax training: ``fit``;
* :mod:`svmjax.batches` — every epoch's minibatch order, drawn from the key;
* :mod:`svmjax.grid` — ``fit_grid``: many configurations in one vmapped run;
* :mod:`svmjax.checkpoint` — atomic ``.npz`` checkpoints, no pickle;
* :mod:`svmjax.model` — model files (parameters, preprocessing, labels), no pickle;
* :mod:`svmjax.cache` — an opt-in persistent compilation cache;
* :mod:`svmjax.solve` — an exact solver with a duality-gap certificate, looping in
  :mod:`svmjax.continuation` on :mod:`svmjax.lbfgs` and the duals of :mod:`svmjax.duals`;
* :class:`svmjax.SVMClassifier` — a scikit-learn estimator (needs the ``data`` extra);
* :mod:`svmjax.conventions` — conversions to torch, optax, Keras, liblinear, sklearn, cs231n;
* :mod:`svmjax.metrics` — classification metrics (:func:`~svmjax.metrics.top_k_accuracy`);
* :mod:`svmjax.gradcheck` — finite differences and the agreement table;
* :mod:`svmjax.data` — built-in data sets and loaders for CIFAR-10, MNIST, LIBSVM files;
* :mod:`svmjax.preprocessing` — feature scaling from training statistics, dense or sparse;
* :mod:`svmjax.plots` — learning curves and weight templates (matplotlib extra);
* :mod:`svmjax.sharding` — meshes for data-parallel ``fit`` and sharded ``fit_grid``;
* :mod:`svmjax.validation` — input checks (:func:`validate`).
"""

from typing import TYPE_CHECKING

from svmjax import (
    analytic,
    batches,
    cache,
    checkpoint,
    continuation,
    conventions,
    data,
    duals,
    fused,
    gradcheck,
    grid,
    lbfgs,
    linear,
    losses,
    metrics,
    model,
    optim,
    plots,
    preprocessing,
    registry,
    sharding,
    solve,
    train,
)
from svmjax.validation import validate

if TYPE_CHECKING:  # imported lazily at run time (scikit-learn is optional), see __getattr__
    from svmjax.estimator import SVMClassifier

__version__ = "0.1.0"

__all__ = [
    "SVMClassifier",
    "analytic",
    "batches",
    "cache",
    "checkpoint",
    "continuation",
    "conventions",
    "data",
    "duals",
    "fused",
    "gradcheck",
    "grid",
    "lbfgs",
    "linear",
    "losses",
    "optim",
    "metrics",
    "model",
    "plots",
    "preprocessing",
    "registry",
    "sharding",
    "solve",
    "train",
    "validate",
    "__version__",
]


def __getattr__(name: str):
    # scikit-learn is optional: import the estimator only when it is asked for.
    if name == "SVMClassifier":
        from svmjax.estimator import SVMClassifier

        return SVMClassifier
    raise AttributeError(f"module 'svmjax' has no attribute {name!r}")

"""svmjax: multiclass SVM (hinge-family) losses in JAX, with analytic gradients.

Public modules, one concern each (a module whose name starts with ``_`` is internal):

* losses: :mod:`svmjax.losses` (pure ``jnp`` definitions, ``jax.grad`` differentiates them),
  :mod:`svmjax.analytic` (the same losses with hand-written ``custom_vjp`` gradients),
  :mod:`svmjax.family` (the unified template), :mod:`svmjax.registry` (the one list of loss
  names and what each supports), :mod:`svmjax.gradcheck`, :mod:`svmjax.metrics`;
* the model and its training: :mod:`svmjax.linear` (``{"W", "b"}`` and its objective),
  :mod:`svmjax.fused` (the fast analytic objective), :mod:`svmjax.optim`,
  :mod:`svmjax.train` (``fit``), :mod:`svmjax.batches`, :mod:`svmjax.grid` (``fit_grid``),
  :mod:`svmjax.sharding` (meshes), :mod:`svmjax.checkpoint`;
* the exact solver: :mod:`svmjax.solve` (duality-gap certificate), :mod:`svmjax.continuation`,
  :mod:`svmjax.lbfgs`, :mod:`svmjax.duals`; :class:`svmjax.SVMClassifier` (scikit-learn,
  the ``data`` extra); :mod:`svmjax.model` (model files, no pickle);
* data and the rest: :mod:`svmjax.data`, :mod:`svmjax.preprocessing`, :mod:`svmjax.features`
  (random Fourier features), :mod:`svmjax.formats`,
  :mod:`svmjax.validation` (:func:`validate`), :mod:`svmjax.cache`, :mod:`svmjax.conventions`
  (torch, optax, Keras, liblinear, sklearn, cs231n), :mod:`svmjax.plots` (matplotlib extra).
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
    features,
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
    "features",
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

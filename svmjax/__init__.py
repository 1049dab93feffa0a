"""svmjax: multiclass SVM (hinge-family) losses in JAX, with analytic gradients.

Modules, one concern each:

* :mod:`svmjax.losses` — pure ``jnp`` definitions (``jax.grad`` differentiates them);
* :mod:`svmjax.analytic` — the same losses with hand-written ``custom_vjp`` gradients;
* :mod:`svmjax.linear` — the linear model ``{"W", "b"}`` and its regularised objective;
* :mod:`svmjax.fused` — the fast analytic objective (one pass over ``X``, bfloat16 ``X``);
* :mod:`svmjax.solve` — an exact full-batch primal solver with a duality-gap certificate;
* :class:`svmjax.SVMClassifier` — a scikit-learn estimator (needs the ``data`` extra);
* :mod:`svmjax.conventions` — conversions to torch, optax, Keras, liblinear, sklearn, cs231n;
* :mod:`svmjax.metrics` — classification metrics (:func:`~svmjax.metrics.top_k_accuracy`);
* :mod:`svmjax.gradcheck` — finite differences and the agreement table;
* :mod:`svmjax.train` — optax training: ``fit``, ``fit_grid``, checkpoints;
* :mod:`svmjax.data` — built-in data sets and loaders for CIFAR-10, MNIST, LIBSVM files;
* :mod:`svmjax.plots` — learning curves and weight templates (matplotlib extra);
* :mod:`svmjax.sharding` — meshes for data-parallel ``fit`` and sharded ``fit_grid``;
* :mod:`svmjax.validation` — input checks (:func:`validate`).
"""

from svmjax import (
    analytic,
    conventions,
    data,
    fused,
    gradcheck,
    linear,
    losses,
    metrics,
    plots,
    sharding,
    solve,
    train,
)
from svmjax.validation import validate

__version__ = "0.1.0"

__all__ = [
    "SVMClassifier",
    "analytic",
    "conventions",
    "data",
    "fused",
    "gradcheck",
    "linear",
    "losses",
    "metrics",
    "plots",
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

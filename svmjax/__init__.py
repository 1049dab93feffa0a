"""svmjax: multiclass SVM (hinge-family) losses in JAX, with analytic gradients.

Modules, one concern each:

* :mod:`svmjax.losses` — pure ``jnp`` definitions (``jax.grad`` differentiates them);
* :mod:`svmjax.analytic` — the same losses with hand-written ``custom_vjp`` gradients;
* :mod:`svmjax.linear` — the linear model ``{"W", "b"}`` and its regularised objective;
* :mod:`svmjax.gradcheck` — finite differences and the agreement table;
* :mod:`svmjax.train` — optax training: ``fit``, ``fit_grid``, checkpoints;
* :mod:`svmjax.data` — built-in data sets and loaders for CIFAR-10, MNIST, LIBSVM files;
* :mod:`svmjax.plots` — learning curves and weight templates (matplotlib extra);
* :mod:`svmjax.sharding` — meshes for data-parallel ``fit`` and sharded ``fit_grid``;
* :mod:`svmjax.validation` — input checks (:func:`validate`).
"""

from svmjax import analytic, data, gradcheck, linear, losses, plots, sharding, train
from svmjax.validation import validate

__version__ = "0.1.0"

__all__ = [
    "analytic",
    "data",
    "gradcheck",
    "linear",
    "losses",
    "plots",
    "sharding",
    "train",
    "validate",
    "__version__",
]

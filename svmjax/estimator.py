r"""A scikit-learn estimator for the linear multiclass SVMs of svmjax (needs scikit-learn).

:class:`SVMClassifier` is a thin wrapper: labels go through ``classes_``, inputs through
scikit-learn's validation, and the maths stays in functions — :func:`svmjax.solve.solve`
(``solver="exact"``) or :func:`svmjax.train.fit` (``solver="sgd"``).
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import sparse as jax_sparse
from scipy.sparse import issparse
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from svmjax import _checks as checks
from svmjax import linear, optim, registry, train
from svmjax._checks import as_key
from svmjax._sparse import to_csr
from svmjax.solve import primal_objective, solve

__all__ = ["SVMClassifier"]

_SOLVERS = ("exact", "sgd")
_DEFAULT_MAX_ITER = {"exact": 5000, "sgd": 100}
# scikit-learn's validation of X: sparse matrices are kept (other formats become CSR).
_VALIDATION: dict[str, Any] = dict(
    accept_sparse=("csr", "csc", "coo"), dtype=[np.float64, np.float32]
)


def _sparse_checked(X) -> Any:
    """A sparse ``X`` (scipy, or a JAX ``BCOO`` / ``BCSR``) checked as svmjax reads it
    (indices, values; :func:`svmjax._sparse.to_csr`) before scikit-learn converts it, as a
    CSR matrix; any other ``X`` unchanged."""
    return to_csr(X) if issparse(X) or isinstance(X, jax_sparse.BCOO | jax_sparse.BCSR) else X


def _array(X) -> Any:
    """Validated ``X`` as a NumPy array, or the sparse matrix it is."""
    return X if issparse(X) else np.asarray(X)


class SVMClassifier(ClassifierMixin, BaseEstimator):
    r"""Linear multiclass SVM minimising liblinear's primal objective.

    .. math::

        P(W, b) = \tfrac12 \lVert W \rVert_F^2 + C \sum_i s_i\, w_{y_i}\, L(x_i W + b, y_i)

    with :math:`L` one of the losses of :mod:`svmjax.losses`, sample weights :math:`s_i`
    and class weights :math:`w_y`. The intercept :math:`b` is **not** penalised (liblinear,
    and so ``LinearSVC``, appends a constant feature instead, which penalises it; compare
    with ``fit_intercept=False``). Features are used as given: standardise them first
    (e.g. in a ``Pipeline`` with ``StandardScaler``), as for ``LinearSVC``.

    Parameters:
      loss: ``"weston_watkins"`` (default), ``"crammer_singer"`` (``LinearSVC``'s
        ``multi_class="crammer_singer"``), ``"one_vs_rest"`` (the sum of the binary
        hinges, ``LinearSVC``'s default scheme), or any registered loss with a dual
        (:func:`svmjax.registry.names` with ``solver=True``); ``solver="sgd"`` takes every
        registered loss.
      squared: squared hinge instead of hinge.
      C: weight of the summed loss (liblinear's ``C``, not divided by the number of
        examples).
      margin: the hinge margin :math:`\Delta` (default 1, as liblinear).
      class_weight: ``None``, a dict ``{label: weight}`` (missing labels weigh 1) or
        ``"balanced"`` (``n_samples / (n_classes * count(label))``).
      fit_intercept: fit an unpenalised intercept.
      solver: ``"exact"`` — :func:`svmjax.solve.solve`, deterministic, stops on a relative
        duality gap ``tol``; ``"sgd"`` — :func:`svmjax.train.fit` (minibatch SGD, learning
        rate 0.1, batch 256, ``max_iter`` epochs) on the same objective divided by
        :math:`C \sum_i s_i` (its ``reg`` is :math:`1 / (2 C \sum_i s_i)`); it accepts only
        uniform sample weights and ignores ``tol``.
      max_iter: L-BFGS iterations or coordinate passes (``"exact"``, default 5000; see
        :func:`svmjax.solve.solve`'s ``method``) or epochs (``"sgd"``, default 100).
      tol: relative duality gap at which ``"exact"`` stops (default ``1e-3``; float32, the
        default JAX precision, reaches about ``1e-4`` — enable ``jax_enable_x64`` for more).
        ``tol`` is not a static argument of the compiled solver, so changing it builds no
        new program; ``1e-2`` (within 1% of the optimum) is often enough for model
        selection on small data, and stops much sooner (``docs/performance.md``).
      random_state: seed of the initial weights and minibatch order (``"sgd"``): ``None``,
        an int, a ``np.random.RandomState``, or a JAX key (``jax.random.key`` or
        ``jax.random.PRNGKey``); ``"exact"`` is deterministic.
      mesh: ``None`` (default: one device) or a ``jax.sharding.Mesh``, passed to
        :func:`svmjax.solve.solve` or :func:`svmjax.train.fit`, which lay the rows of ``X``
        out over its devices (see the "Scaling out" tutorial).
      loss_options: the loss's extra hyperparameters (e.g. ``{"k": 2}`` for
        ``top_k_hinge``), checked against its registry entry.

    Attributes:
      classes_: the label values, sorted; scores column ``k`` belongs to ``classes_[k]``.
      coef_: ``[n_classes, n_features]`` (one row per class, also for two classes).
      intercept_: ``[n_classes]`` (zeros without ``fit_intercept``).
      n_iter_: L-BFGS iterations, coordinate passes or epochs run.
      objective_: :math:`P` at the solution (:func:`svmjax.solve.primal_objective`).
      dual_gap_: certified bound on :math:`P - P^\star` (``"exact"``; NaN for ``"sgd"``).
      n_features_in_, feature_names_in_: as in scikit-learn.

    ``decision_function`` returns ``[n_samples, n_classes]`` scores, or for two classes the
    difference ``score(classes_[1]) - score(classes_[0])`` ``[n_samples]`` (scikit-learn's
    binary convention). Computation runs in JAX's default float dtype (float32 unless
    ``jax_enable_x64``); the attributes are float64 NumPy arrays.

    Example:
      >>> import numpy as np
      >>> X = np.array([[0.0, 1.0], [1.0, 0.0], [-1.0, -1.0], [0.1, 0.9]])
      >>> clf = SVMClassifier(C=10.0).fit(X, ["a", "b", "c", "a"])
      >>> clf.predict([[0.0, 2.0], [-2.0, -1.0]]).tolist(), clf.coef_.shape
      (['a', 'c'], (3, 2))
    """

    def __init__(
        self,
        loss: str = "weston_watkins",
        *,
        squared: bool = False,
        C: float = 1.0,
        margin: float = 1.0,
        class_weight: dict | str | None = None,
        fit_intercept: bool = True,
        solver: str = "exact",
        max_iter: int | None = None,
        tol: float = 1e-3,
        random_state: int | np.random.RandomState | None = None,
        mesh: jax.sharding.Mesh | None = None,
        loss_options: dict | None = None,
    ):
        self.loss = loss
        self.squared = squared
        self.C = C
        self.margin = margin
        self.class_weight = class_weight
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.mesh = mesh
        self.loss_options = loss_options

    def _check_params(self) -> None:
        if self.solver not in _SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(_SOLVERS)}, got {self.solver!r}")
        names = registry.names(solver=self.solver == "exact")
        if self.loss not in names:
            raise ValueError(
                f"loss must be one of {', '.join(names)} for solver={self.solver!r}, "
                f"got {self.loss!r}"
            )
        for name in ("C", "margin", "tol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
            checks.scalar(name, value, positive=True)
        if self.max_iter is not None:
            checks.count("max_iter", self.max_iter)
        if not (
            self.class_weight is None
            or self.class_weight == "balanced"
            or isinstance(self.class_weight, dict)
        ):
            raise ValueError(
                f"class_weight must be None, 'balanced' or a dict, got {self.class_weight!r}"
            )

    def _class_weights(self, y_index: np.ndarray) -> np.ndarray | None:
        if self.class_weight is None:
            return None
        if isinstance(self.class_weight, str):  # "balanced", checked in _check_params
            return compute_class_weight(
                "balanced", classes=np.arange(len(self.classes_)), y=y_index
            )
        unknown = set(self.class_weight) - set(self.classes_.tolist())
        if unknown:
            raise ValueError(f"class_weight has labels not in y: {sorted(map(str, unknown))}")
        return np.array([float(self.class_weight.get(label, 1.0)) for label in self.classes_])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # scipy.sparse X is read as its non-zeros
        return tags

    def fit(self, X, y, sample_weight=None) -> SVMClassifier:
        """Fit the model; returns ``self``.

        Args:
          X: ``[n_samples, n_features]`` numbers: an array, or a sparse matrix
            (``scipy.sparse``, or ``jax.experimental.sparse`` ``BCOO`` / ``BCSR``), which
            stays sparse throughout (see the guide's section on sparse data).
          y: ``[n_samples]`` labels of any type (stored in ``classes_``).
          sample_weight: optional non-negative ``[n_samples]``; weight ``k`` is the same as
            repeating the example ``k`` times.
        """
        self._check_params()
        X, y = validate_data(self, _sparse_checked(X), y, **_VALIDATION)
        X = _array(X)
        check_classification_targets(y)
        self.classes_, y_index = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                "Classifier can't train when only one class is present: SVMClassifier needs "
                f"at least 2 classes, got {len(self.classes_)}"
            )
        n = X.shape[0]
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64)
            if sample_weight.shape != (n,):
                raise ValueError(
                    f"sample_weight.shape == {sample_weight.shape}, expected {(n,)} "
                    "(one weight per sample)"
                )
            if not np.all(np.isfinite(sample_weight)) or np.any(sample_weight < 0):
                raise ValueError("sample_weight must be finite and non-negative")
        class_weights = self._class_weights(y_index)
        dtype = jnp.result_type(float)  # float32, or float64 with jax_enable_x64
        X_jax, y_jax = X.astype(dtype), y_index.astype(np.int32)
        max_iter = self.max_iter or _DEFAULT_MAX_ITER[self.solver]
        options: dict[str, Any] = dict(
            loss=self.loss, squared=bool(self.squared), margin=float(self.margin)
        )
        extra = dict(registry.loss_options(self.loss, self.loss_options))
        if extra:
            options["loss_options"] = extra
        if self.solver == "exact":
            result = self._fit_exact(X_jax, y_jax, sample_weight, class_weights, max_iter, options)
            params, self.n_iter_ = result.params, int(result.n_iter)
            self.objective_, self.dual_gap_ = float(result.objective), float(result.gap)
        else:
            params = self._fit_sgd(X_jax, y_jax, sample_weight, class_weights, max_iter, options)
            objective = primal_objective(
                params,
                X_jax,
                y_jax,
                C=float(self.C),
                sample_weight=sample_weight,
                class_weights=class_weights,
                **options,
            )
            self.n_iter_, self.objective_, self.dual_gap_ = max_iter, float(objective), np.nan
        self.coef_ = np.asarray(params["W"], np.float64).T.copy()
        self.intercept_ = np.asarray(params["b"], np.float64).copy()
        return self

    def _fit_exact(self, X, y, sample_weight, class_weights, max_iter, options):
        result = solve(
            X,
            y,
            C=float(self.C),
            sample_weight=sample_weight,
            class_weights=class_weights,
            fit_intercept=bool(self.fit_intercept),
            n_classes=len(self.classes_),
            tol=float(self.tol),
            max_iter=max_iter,
            mesh=self.mesh,
            **options,
        )
        if not bool(result.converged):
            gap = float(result.gap / result.objective)
            if bool(result.stalled):  # more iterations would not help
                advice = (
                    f"it stalled at the limit of {X.dtype} precision after "
                    f"{int(result.n_iter)} iterations; raise tol to about {gap:.0e}"
                    + (" or enable jax_enable_x64" if X.dtype != np.float64 else "")
                )
            else:
                advice = f"it reached max_iter={max_iter}; increase max_iter (or tol)"
            warnings.warn(
                f"the exact solver stopped at relative duality gap {gap:.2g} > "
                f"tol={self.tol}: {advice}",
                ConvergenceWarning,
                stacklevel=3,
            )
        return result

    def _fit_sgd(self, X, y, sample_weight, class_weights, max_iter, options):
        n = X.shape[0]
        scale = 1.0
        if sample_weight is not None:
            if np.ptp(sample_weight) > 0 or sample_weight[0] <= 0:
                raise ValueError(
                    "solver='sgd' accepts only uniform positive sample weights "
                    "(svmjax.train.fit has no per-example weights); use solver='exact'"
                )
            scale = float(sample_weight[0])
        if isinstance(self.random_state, jax.Array):  # a JAX key, typed or raw
            init_key, key = jax.random.split(as_key(self.random_state))
        else:
            seed = check_random_state(self.random_state).randint(2**31 - 1)
            init_key, key = jax.random.split(jax.random.key(seed))
        params = linear.init(init_key, X.shape[1], len(self.classes_), dtype=X.dtype)
        optimizer = optim.DEFAULT_OPTIMIZER
        if not self.fit_intercept:  # keep b at zero: mask out its updates
            frozen = optax.masked(optax.set_to_zero(), {"W": False, "b": True})
            optimizer = optax.chain(optimizer, frozen)
        params, _ = train.fit(
            params,
            X,
            y,
            key=key,
            optimizer=optimizer,
            reg=1.0 / (2.0 * float(self.C) * scale * n),
            epochs=max_iter,
            batch_size=min(256, n),
            class_weights=class_weights,
            mesh=self.mesh,
            **options,
        )
        return params

    def decision_function(self, X) -> np.ndarray:
        """Scores ``X @ coef_.T + intercept_``: ``[n_samples, n_classes]``, or for two
        classes ``[n_samples]`` (positive means ``classes_[1]``)."""
        check_is_fitted(self)
        X = _array(validate_data(self, _sparse_checked(X), reset=False, **_VALIDATION))
        scores = X @ self.coef_.T + self.intercept_[None, :]
        return scores[:, 1] - scores[:, 0] if len(self.classes_) == 2 else scores

    def predict(self, X) -> np.ndarray:
        """The label of the highest score (ties: the first of ``classes_``)."""
        check_is_fitted(self)
        X = _array(validate_data(self, _sparse_checked(X), reset=False, **_VALIDATION))
        scores = X @ self.coef_.T + self.intercept_[None, :]
        return self.classes_[np.argmax(scores, axis=1)]

    def save(self, path) -> None:
        """Write the fitted estimator to a model file (:mod:`svmjax.model`, no pickle):
        ``coef_``, ``intercept_``, ``classes_`` (labels JSON can hold: strings, numbers,
        booleans), the parameters (not ``mesh``, and ``random_state`` only as an int) and
        ``n_iter_``, ``objective_``, ``dual_gap_``, ``feature_names_in_``. :meth:`load`
        reads it back, ``svmjax predict`` predicts with it."""
        from svmjax import model

        check_is_fitted(self)
        params: dict[str, Any] = self.get_params()
        params = {k: v for k, v in params.items() if k not in ("mesh", "random_state")}
        if isinstance(self.random_state, int):
            params["random_state"] = self.random_state
        if isinstance(self.class_weight, dict):  # JSON keys are strings: pairs keep labels
            params["class_weight"] = [[k, float(v)] for k, v in self.class_weight.items()]
        fitted = {name: getattr(self, name) for name in ("n_iter_", "objective_", "dual_gap_")}
        if "feature_names_in_" in vars(self):  # set by scikit-learn for named columns
            fitted["feature_names_in_"] = vars(self)["feature_names_in_"].tolist()
        training = {"estimator": "SVMClassifier", "params": params, "fitted": fitted}
        saved = model.Model(self.coef_.T, self.intercept_, classes=self.classes_, loss=self.loss,
                            squared=self.squared, margin=self.margin,
                            loss_options=self.loss_options or {}, training=training)  # fmt: skip
        model.save(path, saved)

    @classmethod
    def load(cls, path) -> SVMClassifier:
        """The fitted estimator of a model file: one :meth:`save` wrote, or any model
        without preprocessing (e.g. :func:`svmjax.model.save` of ``fit``'s parameters)."""
        from svmjax import model

        saved = model.load(path)
        if saved.offset is not None or saved.scale is not None or saved.preprocess:
            raise ValueError(
                f"{path}: the model preprocesses its features, SVMClassifier does not; "
                "predict with svmjax.model.load(path).predict"
            )
        training = saved.training if saved.training.get("estimator") == "SVMClassifier" else {}
        names = cls._get_param_names()
        params: dict[str, Any] = dict(training.get("params", {}))
        params = {k: v for k, v in params.items() if k in names}
        if isinstance(params.get("class_weight"), list):
            params["class_weight"] = {label: weight for label, weight in params["class_weight"]}
        params |= dict(loss=saved.loss, squared=saved.squared, margin=saved.margin)
        params["loss_options"] = saved.loss_options or None
        estimator = cls(**params)
        estimator.coef_ = saved.W.astype(np.float64).T.copy()
        estimator.intercept_ = saved.b.astype(np.float64)
        estimator.classes_ = saved.classes
        vars(estimator)["n_features_in_"] = saved.n_features  # as scikit-learn sets them
        fitted = training.get("fitted", {})
        estimator.n_iter_ = int(fitted.get("n_iter_", 0))
        for name in ("objective_", "dual_gap_"):
            setattr(estimator, name, float(fitted.get(name, np.nan)))
        if "feature_names_in_" in fitted:
            names = np.asarray(fitted["feature_names_in_"], dtype=object)
            vars(estimator)["feature_names_in_"] = names
        return estimator

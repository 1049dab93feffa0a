r"""Exact (full-batch, deterministic) solver for the regularised linear multiclass SVM.

:func:`solve` minimises liblinear's primal (:func:`primal_objective`)

.. math::

    P(W, b) = \tfrac12 \lVert W \rVert_F^2 + \sum_{i=1}^{N} c_i\, L(x_i W + b,\ y_i),
    \qquad c_i = C\, s_i\, w_{y_i},

for every loss with a derived dual (Weston–Watkins, Crammer–Singer, one-vs-rest; hinge or
squared hinge, any margin :math:`\Delta`), with sample weights :math:`s_i`, class weights
:math:`w_y` and an optional *unpenalised* intercept :math:`b`. It stops on a **duality
gap**: the returned ``gap`` is a certified upper bound on :math:`P(W, b) - P^\star` (up to
floating-point rounding). :func:`solve_path` solves a path of ``C`` values, warm-started.

The method (smoothing continuation with L-BFGS, the certificate, the intercept step, the
shape buckets that let data of similar size share one compiled program) is described on
the docs page *How the solver works*; its loop is :mod:`svmjax.continuation`. In float32
the certificate reaches a relative gap of ``1e-3`` (the default ``tol``) and often
``1e-4``; in float64 (``jax_enable_x64``) about ``1e-9``. Every product runs at
``jax.lax.Precision.HIGHEST``.

References: Y. Nesterov, "Smooth minimization of non-smooth functions", Math. Program.
2005; K. Crammer and Y. Singer, JMLR 2001; S. S. Keerthi et al., "A sequential dual method
for large scale multi-class linear SVMs", KDD 2008; R.-E. Fan et al., "LIBLINEAR", JMLR 2008.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.typing import ArrayLike

from svmjax import _checks as checks
from svmjax import _sparse, continuation, dual_coordinate, registry, sharding
from svmjax._inputs import check_rows, on_devices, on_host
from svmjax._sparse_products import times
from svmjax.continuation import SolveResult
from svmjax.validation import validate

__all__ = ["solve", "solve_path", "primal_objective"]

_MU0 = 0.1  # initial smoothing, relative to the margin


def _bucket(n: int, minimum: int, steps_per_octave: int) -> int:
    """``n`` rounded up to ``minimum`` or to a multiple of ``2**k / steps_per_octave`` with
    ``2**k <= n`` (so at most ``1 / steps_per_octave`` is padding)."""
    if n <= minimum:
        return minimum
    step = max(1, (1 << (n.bit_length() - 1)) // steps_per_octave)
    return -(-n // step) * step


def _weights(y, n, sample_weight, class_weights, C, n_classes):
    """``c_i = C * s_i * w_{y_i}`` ``[N]``, checked."""
    s = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},) (one per example), got {s.shape}")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError("sample_weight must be finite and non-negative")
    w = checks.class_weights(class_weights, n_classes)
    c = checks.scalar("C", C, positive=True) * s * (1.0 if w is None else w.astype(float)[y])
    if not np.any(c > 0):
        raise ValueError("the weights are all zero: sample_weight * class_weights is 0 everywhere")
    return c


def _global_rows(X, y, sample_weight, class_weights, C, n_classes, loss, mesh):
    """``(X, y, c, n_classes)`` of arrays that stay on the devices (spanning several
    processes, or laid out by rows already), laid out by rows
    (:func:`svmjax.sharding.shard_rows`) and checked there (nothing gathered)."""
    continuation.dual_of(loss)
    checks.check_dtypes(X, y, "X")
    if X.ndim != 2 or y.shape != X.shape[:1]:
        raise ValueError(f"X must have shape [N, D] and y [N], got {X.shape} and {y.shape}")
    X, y = sharding.shard_rows(X, mesh), sharding.shard_rows(y, mesh)
    n = check_rows(X, y, n_classes)
    if n_classes is None:
        n_classes = int(jnp.max(y)) + 1
    s = jnp.ones(X.shape[0], X.dtype) if sample_weight is None else sample_weight
    s = sharding.shard_rows(s, mesh, fill=0).astype(X.dtype)
    if s.shape != y.shape or not bool(jnp.all(jnp.isfinite(s) & (s >= 0))):
        raise ValueError(f"sample_weight must have shape ({n},), finite and non-negative")
    w = checks.class_weights(class_weights, n_classes)
    w = jnp.ones(n_classes, X.dtype) if w is None else jnp.asarray(w, X.dtype)
    C = checks.scalar("C", C, positive=True)
    c = jnp.where(y >= 0, C * s * w[jnp.maximum(y, 0)], 0)
    if not bool(jnp.any(c > 0)):
        raise ValueError("the weights are all zero: sample_weight * class_weights is 0 everywhere")
    return X, jnp.maximum(y, 0), c, n_classes


def _check(X, y, loss, n_classes):
    continuation.dual_of(loss)  # an unknown loss, or one without a dual, is refused here
    if _sparse.is_sparse(X):
        return _check_sparse(X, y, n_classes)
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2:
        raise ValueError(f"X must have shape [N, D], got {X.shape}")
    if n_classes is None:
        n_classes = int(y.max()) + 1 if y.size and np.issubdtype(y.dtype, np.integer) else 2
    X, y = validate(X, y, n_classes=n_classes, name="X")
    return np.asarray(X), np.asarray(y, np.int32), n_classes


def _check_sparse(X, y, n_classes):
    """A sparse ``X`` checked and canonical (:func:`svmjax._sparse.to_csr`), its values in
    the solver's dtype, and the labels checked as :func:`svmjax.validate` checks them."""
    csr, y = _sparse.to_csr(X), np.asarray(y)
    checks.check_dtypes(csr.data, y, "X")
    if y.shape != csr.shape[:1]:
        raise ValueError(f"labels shape {y.shape} does not match X shape {csr.shape}")
    if csr.shape[0] == 0:
        raise ValueError(f"X is empty (shape {csr.shape})")
    if n_classes is None:
        n_classes = int(y.max()) + 1
    if n_classes < 2:
        raise ValueError(f"need at least 2 classes, got {n_classes}")
    checks.check_labels(y, n_classes)
    dtype = jax.dtypes.canonicalize_dtype(csr.dtype)
    return csr.astype(dtype, copy=False), y.astype(np.int32), n_classes


def primal_objective(
    params: Mapping[str, ArrayLike],
    X: ArrayLike,
    y: ArrayLike,
    *,
    C: float = 1.0,
    loss: str = "weston_watkins",
    squared: bool = False,
    margin: float = 1.0,
    sample_weight: ArrayLike | None = None,
    class_weights: ArrayLike | None = None,
    loss_options: Mapping[str, Any] | None = None,
) -> jax.Array:
    r"""liblinear's primal :math:`\tfrac12 \lVert W \rVert^2 + C \sum_i s_i w_{y_i} L_i`.

    The loss values come from :mod:`svmjax.losses`; the intercept ``params["b"]`` (``[C]``)
    is not penalised. This is the quantity :func:`solve` minimises, and the one to compare
    with scikit-learn's ``LinearSVC``: ``{"W": model.coef_.T, "b": model.intercept_}``
    (``LinearSVC`` penalises its intercept, so compare with ``fit_intercept=False``).

    Args:
      params: ``{"W": [D, C], "b": [C]}`` (``"b"`` optional).
      X, y: float features ``[N, D]``, integer labels ``[N]`` in ``[0, C)``.
      C: the weight of the data term (liblinear's ``C``).
      loss, squared, margin: which loss (see :mod:`svmjax.losses`).
      sample_weight: ``s_i`` ``[N]``; class_weights: ``w_y`` ``[C]``.
      loss_options: the loss's extra hyperparameters (any registered loss works here,
        not only those :func:`solve` takes).

    Example:
      >>> import jax.numpy as jnp
      >>> params = {"W": jnp.array([[1.0, -1.0]])}
      >>> float(primal_objective(params, jnp.array([[1.0], [0.5]]), jnp.array([0, 1]), C=2.0))
      5.0
    """
    options = registry.loss_options(loss, loss_options)
    features = _sparse.as_rows(X) if _sparse.is_sparse(X) else X
    W = jnp.asarray(params["W"])
    b = jnp.asarray(params["b"]) if "b" in params else jnp.zeros(W.shape[1], W.dtype)
    return _primal_objective(
        W,
        b,
        features,
        y,
        C,
        margin,
        sample_weight,
        class_weights,
        loss=loss,
        squared=bool(squared),
        options=options,
    )


@jax.jit
def _uncentre(b: jax.Array, mean: jax.Array, W: jax.Array) -> jax.Array:
    """``b - mean @ W``: the intercept for uncentred data, at full precision like every
    product of the solve (a GPU's default would be TF32)."""
    return b - jnp.matmul(mean, W, precision=jax.lax.Precision.HIGHEST)


@functools.partial(jax.jit, static_argnames=("loss", "squared", "options"))
def _primal_objective(
    W, b, X, y, C, margin, sample_weight, class_weights, *, loss, squared, options
):
    # Full float32 products (as in the solver): the objective is what the certificate is about.
    if isinstance(X, _sparse.SparseRows):  # no matrix unit: float32 sums at full precision
        scores = times(X, W) + b[None, :]
    else:
        scores = jnp.matmul(jnp.asarray(X), W, precision=jax.lax.Precision.HIGHEST) + b[None, :]
    per_example = registry.get(loss).pure(
        scores, y, margin=margin, squared=squared, class_weights=class_weights, **dict(options)
    )
    if sample_weight is not None:
        per_example = per_example * jnp.asarray(sample_weight, per_example.dtype)
    return 0.5 * jnp.sum(W * W) + C * jnp.sum(per_example)


def solve(
    X: ArrayLike,
    y: ArrayLike,
    *,
    loss: str = "weston_watkins",
    squared: bool = False,
    C: float = 1.0,
    margin: float = 1.0,
    sample_weight: ArrayLike | None = None,
    class_weights: ArrayLike | None = None,
    fit_intercept: bool = False,
    n_classes: int | None = None,
    tol: float = 1e-3,
    max_iter: int = 5000,
    init: dict[str, ArrayLike] | None = None,
    mesh: Mesh | None = None,
    loss_options: Mapping[str, Any] | None = None,
    method: str = "auto",
    key: jax.Array | None = None,
) -> SolveResult:
    r"""Minimise :func:`primal_objective` to a relative duality gap ``tol``.

    Args:
      X: float features ``[N, D]`` (the solver works in this dtype: float32, or float64
        with ``jax_enable_x64``), dense or sparse: a ``scipy.sparse`` matrix or array or a
        ``jax.experimental.sparse`` ``BCOO`` / ``BCSR``, read as its non-zeros (never
        densified, never centred: the intercept is fitted as it is; see the guide's
        section on sparse data).
      y: integer class indices ``[N]`` in ``[0, n_classes)``.
      loss: any built-in machine of :func:`svmjax.registry.names` (``solver=True``:
        Weston–Watkins, Crammer–Singer, one-vs-rest, the unified template and its
        members, the top-k hinges; smooth top-k at ``k = 1``), or a registered loss with
        a :class:`svmjax.duals.Dual`. A loss registered with ``constraint="sum_to_zero"``
        (Lee–Lin–Wahba, ATS, ATM, ADM, MMR, reinforced) is solved under
        :math:`\sum_c w_c = 0` (and :math:`\sum_c b_c = 0` with an intercept), kept in
        every iterate to float rounding (``init`` is projected onto it).
      squared: squared hinge instead of hinge.
      C: liblinear's ``C``: weight of the summed (not averaged) loss against
        :math:`\tfrac12\lVert W\rVert^2`.
      margin: the hinge margin :math:`\Delta` (liblinear uses 1).
      sample_weight: optional non-negative ``[N]``; weight 2 is the same as the example
        appearing twice.
      class_weights: optional non-negative ``[n_classes]``, multiplying the loss of each
        example of that class.
      fit_intercept: fit an unpenalised intercept ``b`` (liblinear instead appends a
        constant feature, which penalises it).
      n_classes: number of classes; default ``max(y) + 1``.
      tol: stop when ``P - D <= tol * P`` (relative duality gap).
      max_iter: cap on L-BFGS iterations (each costs a few passes over the data), or on
        the coordinate method's passes.
      init: optional warm start ``{"W": [D, C], "b": [C]}``.
      loss_options: the loss's extra hyperparameters (e.g. ``{"k": 2}``), static: each
        setting compiles its own program; a setting no derived dual covers is refused,
        naming the option.
      mesh: a ``jax.sharding.Mesh``: ``X``, ``y`` and the weights ``c_i`` are laid out by
        rows over all its devices (:func:`svmjax.sharding.shard_rows`, padding rows of
        weight 0); the variables and the L-BFGS memory are replicated. The objective,
        gradient and duality gap are sums over the rows, so XLA all-reduces their partial
        sums (a few ``[C, D]``-sized all-reduces and some scalars per iteration); the
        result equals the one-device solve to float rounding. ``X``, ``y`` and
        ``sample_weight`` may be host arrays (the same on every process) or global
        ``jax.Array`` s spanning several processes, e.g. from ``shard_rows(rows, mesh,
        n=N)`` on each process (label ``-1`` marks padding rows); those are checked and
        centred on the devices, never gathered. ``None`` (default): one device.
      method: ``"continuation"`` (smoothing continuation with L-BFGS: every loss and
        setting), ``"coordinate"`` (dual coordinate ascent, :mod:`svmjax.dual_coordinate`:
        Crammer–Singer's hinge only, without ``init``, ``loss_options`` or ``mesh``, dense
        ``X``) or ``"auto"`` (default): the coordinate method where it
        applies, on CPU, beyond ``dual_coordinate.MANY_CLASSES`` classes (there it needs
        tens of passes where the continuation needs hundreds of iterations of about the
        same cost), else the continuation.
      key: the coordinate method's random order of the examples (a ``jax.random.key`` or
        ``PRNGKey``; default ``jax.random.key(0)``): same key, same result.

    Returns:
      A :class:`svmjax.continuation.SolveResult`. It does not raise when ``max_iter`` is
      reached first; check ``converged`` (or ``gap``).

    Example:
      >>> import jax.numpy as jnp
      >>> X = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
      >>> result = solve(X, jnp.array([0, 1, 2]), C=10.0)
      >>> bool(result.converged), result.params["W"].shape
      (True, (2, 3))
      >>> bool(0 <= result.gap <= 1e-3 * result.objective)  # a certified relative gap
      True
    """
    options = registry.loss_options(loss, loss_options)
    if mesh is not None:
        checks.check_mesh(mesh)
        mesh = sharding.auto_axes(mesh)
    resident = mesh is not None and on_devices(mesh, X, y, sample_weight)
    resident = resident and not _sparse.is_sparse(X)
    features: Any  # checked: a NumPy array, a global jax.Array or a CSR matrix
    if resident:
        features, y, c, n_classes = _global_rows(
            X, y, sample_weight, class_weights, float(C), n_classes, loss, mesh
        )
        continuation.dual_of(loss, options, n_classes, bool(squared))
    else:
        with on_host():  # the checks make jax.Arrays: not all of X on one device
            features, y, n_classes = _check(X, y, loss, n_classes)
        continuation.dual_of(loss, options, n_classes, bool(squared))  # options it refuses
        c = _weights(y, len(y), sample_weight, class_weights, float(C), n_classes)
    n, d = features.shape
    dtype = features.dtype
    sparse = _sparse.is_sparse(features)
    settings = (loss, squared, options, init, mesh, sparse, n_classes)
    coordinate = dual_coordinate.applies(method, *settings)
    margin = checks.scalar("margin", margin, positive=True)
    tol = checks.scalar("tol", tol, positive=True)
    max_iter = checks.count("max_iter", max_iter)
    init = {} if init is None else init
    W0 = np.asarray(init.get("W", np.zeros((d, n_classes))), dtype)
    b0 = np.asarray(init.get("b", np.zeros(n_classes)), dtype)
    if W0.shape != (d, n_classes) or b0.shape != (n_classes,):
        raise ValueError(
            f"init must be {{'W': ({d}, {n_classes}), 'b': ({n_classes},)}}, got "
            f"W {W0.shape}, b {b0.shape}"
        )
    # With an (unpenalised) intercept, centring the features is an exact change of
    # variables, b' = b + mean @ W, and it keeps uncentred data (say, all x near 100) from
    # being needlessly ill-conditioned. Sparse data is never centred (that would fill it).
    centre = fit_intercept and not sparse
    if resident:  # global arrays: centred where they live, not padded further
        mean = np.asarray(c @ features / jnp.sum(c), np.float64) if centre else np.zeros(d)
        Xc, n_pad, d_pad = features - jnp.asarray(mean, dtype)[None, :], 0, 0
    else:
        mean = np.average(features, axis=0, weights=c) if centre else np.zeros(d)
        Xc = (features - mean[None, :]).astype(dtype) if centre else features  # no copy when not
        # Pad to a bucketed shape (rows of weight 0, columns of zeros: the solution is the
        # same) so that problems of similar size share one compiled program; under a mesh,
        # to a multiple of the devices too.
        devices = 1 if mesh is None else mesh.size
        # Columns are padded more finely than rows (every pass over X pays for them).
        n_pad, d_pad = -(-_bucket(n, 512, 8) // devices) * devices - n, _bucket(d, 16, 16) - d
    b0 = b0 + (mean @ W0).astype(dtype) if centre else b0

    def rows(x):  # split by rows over the mesh (on one device: as is)
        if mesh is None:
            return x
        return sharding.put(x, mesh, sharding.batch_spec(mesh, np.ndim(x)))

    def same(x):  # replicated
        return x if mesh is None else sharding.put(x, mesh)

    # Host arrays of the final dtypes: jnp.asarray(value, dtype) would compile a small
    # conversion program per argument in a fresh process.
    def pad(x, widths):  # np.pad copies even when there is nothing to pad
        return x if resident or not np.any(widths) else np.pad(x, widths)

    if sparse:  # each device's rows as its own block of non-zeros
        blocks = 1 if mesh is None else mesh.size
        laid_out = _sparse.lay_out(
            Xc, dtype, blocks=blocks, block_rows=(n + n_pad) // blocks, n_cols=d + d_pad,
            transposed=True,
        )  # fmt: skip
        X_rows = _sparse.place(laid_out, mesh)
    else:
        X_rows = rows(pad(Xc, ((0, n_pad), (0, d_pad))))
    if coordinate:
        result = dual_coordinate.run(
            X_rows,
            pad(y, (0, n_pad)),
            pad(c, (0, n_pad)).astype(dtype),
            np.asarray(margin, dtype),
            np.asarray(tol, dtype),
            np.asarray(int(max_iter), np.int32),
            jax.random.key(0) if key is None else key,
            bool(fit_intercept),
            n_classes=n_classes,
        )
    else:
        result = continuation.run(
            X_rows,
            rows(pad(y, (0, n_pad))),
            rows(pad(c, (0, n_pad)).astype(dtype)),
            same(np.asarray(margin, dtype)),
            same(np.asarray(tol, dtype)),
            same(np.asarray(int(max_iter), np.int32)),
            same(np.asarray(_MU0 * margin, dtype)),
            same({"W": np.pad(W0, ((0, d_pad), (0, 0))), "b": np.asarray(b0, dtype)}),
            same(np.asarray(bool(fit_intercept))),
            loss=loss,
            squared=bool(squared),
            options=options,
        )
    if mesh is not None:  # replicated global arrays: unpad where they live
        W = result.params["W"][:d]
        b = result.params["b"]
        b = _uncentre(b, jnp.asarray(mean, dtype), W) if centre else b
        return result._replace(params={"W": W, "b": b})
    # One device: unpad and undo the centring on the host, and hand back by a transfer;
    # eager JAX ops here (jnp.asarray too) would each compile a small program of their own
    # in a fresh process.
    W = np.asarray(result.params["W"])[:d]
    b = np.asarray(result.params["b"])
    if centre:
        b = (b - np.asarray(mean).astype(dtype) @ W).astype(dtype)
    return result._replace(params={"W": jax.device_put(W), "b": jax.device_put(b)})


def solve_path(
    X: ArrayLike,
    y: ArrayLike,
    Cs: tuple[float, ...] | list[float],
    **options,
) -> list[SolveResult]:
    """:func:`solve` for every ``C`` in ``Cs``, each warm-started from the previous solution
    (in increasing ``C``); one :class:`svmjax.continuation.SolveResult` per ``C``, in the
    order of ``Cs``.

    Every result carries its own certificate, so each meets ``tol`` (or says it did not)
    exactly as an independent :func:`solve` would; the path only saves iterations. All
    solves share one compiled program (same shapes). Where the first solve takes the
    coordinate method (``method="coordinate"``, or ``"auto"`` on many classes), every solve
    does, each from zero: that method takes no warm start.

    Args:
      X, y: as for :func:`solve`.
      Cs: the values of ``C`` (each ``> 0``).
      **options: any other keyword argument of :func:`solve` except ``C`` and ``init``.

    Example:
      >>> import jax.numpy as jnp
      >>> X = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [0.5, 0.4]])
      >>> path = solve_path(X, jnp.array([0, 1, 2, 0]), [1.0, 0.1, 10.0])
      >>> len(path), all(bool(r.converged) for r in path)
      (3, True)
    """
    if "C" in options or "init" in options:
        raise ValueError("solve_path takes the Cs as its third argument and warm-starts itself")
    Cs = [checks.scalar("C", C, positive=True) for C in Cs]
    results: dict[int, SolveResult] = {}
    init: dict[str, ArrayLike] | None = None
    cold = dual_coordinate.takes_path(X, y, options)
    if cold:  # the coordinate method for every C, each from its own start (it takes no init)
        options = {**options, "method": "coordinate"}
    for i in sorted(range(len(Cs)), key=Cs.__getitem__):
        results[i] = solve(X, y, C=Cs[i], init=init, **options)
        init = None if cold else dict(results[i].params)
    return [results[i] for i in range(len(Cs))]

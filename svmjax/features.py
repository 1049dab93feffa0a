r"""Random Fourier features: an explicit map whose inner products approximate a Gaussian kernel.

A linear machine trained on :math:`z(x)` approximates the kernel machine with
:math:`k(x, x') = \exp(-\gamma \lVert x - x' \rVert^2)`, at the cost of a linear one
(Rahimi & Recht, "Random features for large-scale kernel machines", NeurIPS 2007).
:func:`fourier_features` draws the map's parameters from a key; :func:`fourier_transform`
applies them. Both are pure functions and jittable (the draw with its sizes static); the
transform's rows are independent (any batching gives the same features).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as scipy_sparse
from jax.experimental import sparse as jax_sparse
from jax.typing import ArrayLike, DTypeLike

from svmjax import _checks as checks

__all__ = ["FourierFeatures", "fourier_features", "fourier_transform"]


class FourierFeatures(NamedTuple):
    """The parameters of a random Fourier feature map (a pytree; what
    :func:`fourier_features` returns and :func:`fourier_transform` takes).

    ``omega`` ``[D, m]``: the frequencies, columns drawn from :math:`N(0, 2\\gamma I_D)`;
    ``phase`` ``[m]``: the offsets, drawn from :math:`U[0, 2\\pi)`.
    """

    omega: jax.Array
    phase: jax.Array


def fourier_features(
    key: ArrayLike,
    n_features_in: int,
    n_components: int,
    *,
    gamma: float,
    dtype: DTypeLike | None = None,
) -> FourierFeatures:
    r"""Draw the parameters of :math:`m` random Fourier features for the Gaussian kernel.

    Bochner's theorem writes a shift-invariant kernel as an expectation over its spectral
    density; the Gaussian kernel's is Gaussian:

    .. math::

        e^{-\gamma \lVert x - x' \rVert^2}
        = \mathbb{E}_{\omega \sim N(0,\, 2\gamma I),\ \beta \sim U[0, 2\pi)}
          \bigl[\, 2 \cos(x^\top \omega + \beta) \cos(x'^\top \omega + \beta) \bigr],

    so :math:`z(x) = \sqrt{2/m}\, \cos(x^\top \Omega + \beta)` with :math:`m` independent
    draws (the columns of :math:`\Omega`) gives :math:`z(x)^\top z(x') \to k(x, x')` as
    :math:`m` grows, with an error of order :math:`1/\sqrt{m}` (each term is bounded, so
    Hoeffding's inequality applies to every pair).

    Args:
      key: a JAX PRNG key, typed (``jax.random.key(seed)``) or legacy raw
        (``jax.random.PRNGKey(seed)``); both give the same bits for the same seed.
      n_features_in: :math:`D`, the number of input features (static: a Python ``int``
        ``>= 1``).
      n_components: :math:`m`, the number of features made (static: a Python ``int``
        ``>= 1``).
      gamma: the kernel's width :math:`\gamma > 0` (scikit-learn's ``gamma`` of ``rbf``;
        :math:`\gamma = 1 / (2\sigma^2)` for a bandwidth :math:`\sigma`; a common start is
        the median heuristic, one over the median squared distance between training rows).
        It may be traced.
      dtype: a float dtype of the parameters (and so of the features); default JAX's
        default float (float32 unless ``jax_enable_x64``).

    Returns:
      :class:`FourierFeatures` with ``omega`` ``[D, m]`` and ``phase`` ``[m]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> params = fourier_features(jax.random.key(0), 2, 4000, gamma=0.5)
      >>> x = jnp.array([[0.0, 0.0], [1.0, 0.0]])
      >>> z = fourier_transform(params, x)
      >>> z.shape
      (2, 4000)
      >>> bool(abs(z[0] @ z[1] - jnp.exp(-0.5)) < 0.05)  # k(x, x') = exp(-0.5 * 1)
      True
    """
    key = checks.as_key(key)
    n_features_in = checks.count("n_features_in", n_features_in)
    n_components = checks.count("n_components", n_components)
    if checks.is_concrete(gamma):
        gamma = checks.scalar("gamma", gamma, positive=True)
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64 if dtype is None else dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a float dtype, got {dtype}")
    k_omega, k_phase = jax.random.split(key)
    omega = jax.random.normal(k_omega, (n_features_in, n_components), dtype)
    omega = omega * jnp.sqrt(2 * jnp.asarray(gamma, dtype))
    phase = jax.random.uniform(k_phase, (n_components,), dtype, 0.0, 2 * math.pi)
    return FourierFeatures(omega=omega, phase=phase)


def fourier_transform(params: FourierFeatures, X: ArrayLike) -> jax.Array:
    r"""The random Fourier features :math:`z(x) = \sqrt{2/m}\, \cos(x^\top\Omega + \beta)`
    of every row of ``X``.

    Args:
      params: :class:`FourierFeatures` from :func:`fourier_features`.
      X: features ``[N, D]``: a dense array (integers and booleans are read as
        ``params``' float dtype), or a sparse matrix (``scipy.sparse``, or
        ``jax.experimental.sparse`` ``BCOO`` / ``BCSR``), multiplied as its non-zeros; the
        result is dense either way (it has no zeros to keep). A ``scipy.sparse`` ``X`` is
        multiplied on the host, so that form is not jittable.

    Returns:
      ``[N, m]`` in ``params``' dtype (or ``X``'s, when that is a wider float). The
      product :math:`x^\top\Omega` runs at ``jax.lax.Precision.HIGHEST`` (an accelerator's
      default float32 product rounds the cosine's argument to about 1e-3).
    """
    omega, phase = params
    if np.ndim(omega) != 2 or np.shape(phase) != (np.shape(omega)[1],):
        raise ValueError(
            "params must be FourierFeatures(omega [D, m], phase [m]), got omega of shape "
            f"{np.shape(omega)} and phase of shape {np.shape(phase)}"
        )
    d, m = np.shape(omega)
    if np.ndim(X) != 2 or np.shape(X)[1] != d:
        raise ValueError(
            f"X must be [N, {d}] (the features the map was drawn for), got {np.shape(X)}"
        )
    matrix: Any = X  # checked below: an array-like or a sparse matrix
    if isinstance(matrix, jax_sparse.BCSR):
        matrix = matrix.to_bcoo()
    if isinstance(matrix, jax_sparse.BCOO):
        wide = jnp.promote_types(matrix.dtype, omega.dtype)
        projected = matrix.astype(wide) @ omega.astype(wide)
    elif scipy_sparse.issparse(matrix):  # on the host, in float64, rounded once
        wide = jnp.promote_types(matrix.dtype, omega.dtype)
        projected = jnp.asarray(matrix @ np.asarray(omega, np.float64), wide)
    else:
        dense = jnp.asarray(matrix)
        if jnp.issubdtype(dense.dtype, jnp.complexfloating):
            raise TypeError(f"X must be real, got {dense.dtype}")
        if not jnp.issubdtype(dense.dtype, jnp.floating):
            dense = dense.astype(omega.dtype)
        projected = jnp.matmul(dense, omega, precision=jax.lax.Precision.HIGHEST)
    return jnp.sqrt(jnp.asarray(2.0 / m, projected.dtype)) * jnp.cos(projected + phase[None, :])

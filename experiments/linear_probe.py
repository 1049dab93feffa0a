"""Synthetic linear-probe features: what the penultimate layer of a trained network gives a
linear classifier, at any size (up to ImageNet's 1,281,167 x 2048), reproducible from a seed.

:func:`features` draws them (the model is in its docstring): class means on a smooth
low-dimensional manifold, so neighbouring classes overlap and are confused with each other
(top-5 accuracy well above top-1), within-class variation along the manifold and in a few
nuisance directions, and non-negative, partly zero, unevenly scaled features, as after a
ReLU. :func:`blobs` draws well-separated Gaussian classes, the easy case. :func:`describe`
summarises a draw. Both generators run in NumPy on the host (no JAX): :func:`features` fills
one preallocated float32 array chunk by chunk in a thread pool, so the ImageNet size needs
its 10.5 GB once plus about 64 MB per thread, and takes seconds on a 16-core machine.

    python experiments/linear_probe.py [--n 50000] [--d 512] [--classes 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

CHUNK_ROWS = 8192  # rows drawn together; the draw of row i depends on (seed, i // CHUNK_ROWS)


def _structure(seed, d, n_classes, latent_dim, width, smoothness, nuisance_rank, nuisance):
    """The class structure of :func:`features` (everything but the examples), float32."""
    rng = np.random.default_rng([seed, 0])
    f32 = np.float32
    return {
        "centres": rng.standard_normal((n_classes, latent_dim), f32),
        "B": (smoothness / np.sqrt(latent_dim) * rng.standard_normal((latent_dim, width))).astype(
            f32
        ),
        "phase": rng.uniform(-1.0, 1.0, width).astype(f32),
        "A": (rng.standard_normal((width, d)) / np.sqrt(0.4 * width)).astype(f32),
        "N": (nuisance / np.sqrt(nuisance_rank) * rng.standard_normal((nuisance_rank, d))).astype(
            f32
        ),
        "gain": np.exp(0.5 * rng.standard_normal(d)).astype(f32),
    }


def features(
    seed: int,
    n: int,
    d: int,
    n_classes: int,
    *,
    latent_dim: int = 8,
    width: int = 256,
    smoothness: float = 1.0,
    within: float = 0.5,
    nuisance_rank: int = 16,
    nuisance: float = 0.5,
    noise: float = 0.5,
    threshold: float = 0.0,
    out: np.ndarray | None = None,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Draw ``n`` synthetic linear-probe examples: float32 features ``X [n, d]`` and int32
    labels ``y [n]`` in ``[0, n_classes)``, balanced: from the start of each chunk of
    ``CHUNK_ROWS`` rows, every ``n_classes`` consecutive rows hold each class once, in random
    order (so the first ``k * n_classes`` rows, for ``k * n_classes <= CHUNK_ROWS``, hold
    each class ``k`` times).

    The class structure comes from ``seed`` alone: latent class centres
    :math:`z_c \sim N(0, I_m)` in ``m = latent_dim`` dimensions, a smooth random map
    :math:`f(z) = A^\top \tanh(B^\top z + \varphi)` into :math:`\mathbb R^d` (``width``
    hidden units, :math:`B \sim N(0, \omega^2 / m)` with :math:`\omega` = ``smoothness``,
    :math:`A \sim N(0, 1 / (0.4\,\mathrm{width}))`, so the pre-activations have variance
    about 1), ``nuisance_rank`` nuisance directions :math:`N` shared by all classes (pose,
    light, background), and per-feature gains :math:`g_k = e^{0.5 \xi_k}`. Example ``i`` of
    class :math:`y_i` is

    .. math::

        x_i = g \odot \max\big(0,\ f(z_{y_i} + \sigma_w u_i) + N^\top v_i
              + \sigma_e e_i - \tau\big)

    with :math:`u_i, v_i, e_i` standard normal, :math:`\sigma_w` = ``within`` (how far an
    example strays along the manifold, towards the neighbouring classes: their overlap),
    nuisance scale ``nuisance``, isotropic noise :math:`\sigma_e` = ``noise`` and ReLU
    threshold :math:`\tau` = ``threshold`` (0: about half the features are zero). The
    classes overlap (no linear classifier separates them once there are enough examples),
    and a class is confused mostly with the few whose centres lie near it.

    Examples are independent given their labels, so a split into the first and the last
    rows is a stratified random split. Rows are drawn ``CHUNK_ROWS`` at a time, each chunk
    from its own streams seeded by ``(seed, chunk)``: the same arguments give the same
    array on the same machine (float32 products may round differently on another),
    whatever ``workers``, and a larger ``n`` extends a smaller draw (its first rows are the
    smaller draw: the labels exactly, the features to float32 rounding, as a product over
    fewer rows may sum in another order).

    Args:
      seed: a non-negative int; it alone fixes the classes and the examples.
      n, d, n_classes: examples, features, classes.
      latent_dim, width, smoothness, within, nuisance_rank, nuisance, noise, threshold:
        the model's parameters, as above.
      out: optional C-contiguous float32 ``[n, d]`` array to fill (e.g. from
        ``np.empty`` or a memory map); without it one is allocated. No other copy of ``X``
        is made.
      workers: threads drawing chunks (default: the CPUs this process may use).

    Example:
      >>> X, y = features(0, 1000, 64, 10)
      >>> X.shape, X.dtype, y.shape, bool(X.min() >= 0), 0.2 < float((X == 0).mean()) < 0.8
      ((1000, 64), dtype('float32'), (1000,), True, True)
    """
    if out is None:
        out = np.empty((n, d), np.float32)
    elif out.shape != (n, d) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {(n, d)}")
    s = _structure(seed, d, n_classes, latent_dim, width, smoothness, nuisance_rank, nuisance)
    y = np.empty(n, np.int32)

    def chunk(j: int) -> None:
        rows = slice(j * CHUNK_ROWS, min(n, (j + 1) * CHUNK_ROWS))
        r = rows.stop - rows.start
        draw = [np.random.default_rng([seed, 1, j, stream]) for stream in range(4)]
        # the chunk's labels as whole blocks of n_classes, each a permutation of the classes
        blocks = np.tile(np.arange(n_classes, dtype=np.int32), (-(-CHUNK_ROWS // n_classes), 1))
        y[rows] = draw[0].permuted(blocks, axis=1).ravel()[:r]
        z = s["centres"][y[rows]] + np.float32(within) * draw[1].standard_normal(
            (r, latent_dim), np.float32
        )
        x = out[rows]  # a view: every step below writes into X itself
        np.matmul(np.tanh(z @ s["B"] + s["phase"]), s["A"], out=x)
        x += draw[2].standard_normal((r, nuisance_rank), np.float32) @ s["N"]
        e = draw[3].standard_normal((r, d), np.float32)
        e *= np.float32(noise)
        x += e
        x -= np.float32(threshold)
        np.maximum(x, 0, out=x)
        x *= s["gain"]

    chunks = range(-(-n // CHUNK_ROWS))
    workers = workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    if workers == 1 or len(chunks) == 1:
        for j in chunks:
            chunk(j)
    else:  # NumPy's draws and products release the GIL
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(chunk, chunks))
    return out, y


def blobs(
    seed: int, n: int, d: int, n_classes: int, *, spread: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    r"""Well-separated Gaussian classes: float32 ``X [n, d]``, int32 ``y [n]`` (uniform).

    :math:`x_i = \mu_{y_i} + e_i` with class means :math:`\mu_c \sim N(0, s^2 I_d)` (``s`` =
    ``spread``) and :math:`e_i \sim N(0, I_d)`: two means lie about :math:`s\sqrt{2d}` apart
    against unit noise, so for ``d`` in the hundreds the classes are linearly separable
    with a wide margin. Reproducible from ``seed``."""
    rng = np.random.default_rng([seed, 2])
    means = spread * rng.standard_normal((n_classes, d), np.float32)
    y = rng.integers(0, n_classes, n).astype(np.int32)
    X = means[y]
    X += rng.standard_normal((n, d), np.float32)
    return X, y


def describe(X: np.ndarray, y: np.ndarray, rows: int = 20_000) -> dict:
    """A few statistics of a draw (over its first ``rows`` rows): shape, size, mean
    feature, share of zeros, mean row norm, the spread of the features' scales (ratio of
    the 90th to the 10th percentile of their standard deviations) and the smallest and
    largest class's share."""
    head = X[:rows].astype(np.float64)
    scale = head.std(axis=0)
    counts = np.bincount(y, minlength=int(y.max()) + 1)
    return {
        "n": int(X.shape[0]),
        "d": int(X.shape[1]),
        "classes": int(counts.size),
        "GiB": X.nbytes / 2**30,
        "mean": float(head.mean()),
        "zeros": float(np.mean(head == 0)),
        "row_norm": float(np.linalg.norm(head, axis=1).mean()),
        "scale_p90_p10": float(np.percentile(scale, 90) / max(np.percentile(scale, 10), 1e-30)),
        "class_share_min_max": (counts.min() / counts.sum(), counts.max() / counts.sum()),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    X, y = features(args.seed, args.n, args.d, args.classes)
    print(describe(X, y))

r"""The linear SVM objective's data term with a fused, layout-aware analytic gradient.

:func:`mean_loss` is the (weighted) mean per-example loss of the linear model, the data
term that :func:`svmjax.linear.objective` runs for ``grad="analytic"``:

.. math::

    J(W, b) = \frac{\sum_i a_i L(x_i W + b,\ y_i)}{\sum_i a_i}, \qquad
    \frac{\partial J}{\partial W} = X^\top M, \qquad
    \frac{\partial J}{\partial b} = \mathbf{1}^\top M,

with the score cotangents ``M`` ``[N, C]`` taken from the VJP of the analytic loss
(:mod:`svmjax.analytic`), so the hinge rules are written once, there. A ``jax.custom_vjp``
at the level of ``W`` and ``b`` computes the weight gradient in the layout XLA:CPU runs
fast (``M.T @ X``, ``[C, D]``) and, on CPU, sweeps ``X`` in row blocks so that each block
gives its scores, its rows of ``M`` and its gradient update while in cache
(:func:`block_rows` picks the block size; :func:`sweep_rows` the rows of one block). On GPU
the weight gradient is summed over row chunks (:func:`rows_product`, :func:`row_chunks`).
``X`` may be ``bfloat16`` (half the memory; products and gradients in float32). Works under
``jit``, ``vmap`` and ``grad``; like every ``custom_vjp``, not in forward mode (use
``grad="autodiff"`` of :func:`svmjax.linear.objective` for ``jax.jvp`` or Hessians).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from svmjax import registry
from svmjax._checks import check_labels, is_concrete

__all__ = ["mean_loss", "block_rows", "sweep_rows", "row_chunks", "rows_product"]

_BLOCK_ROWS = 1024  # enough rows for the products to run at speed, few loop steps...
_MAX_BLOCK_BYTES = 16 * 2**20  # ...while a block stays in cache between its two products
_ONE_BLOCK_BYTES = 128 * 2**20  # up to this, two whole passes beat the loop (measured)...
_LONG_ROW_BYTES = 6 * 2**10  # ...and at any size for rows this long (measured)
_CLASS_TILE = 16  # the forward product pads the classes to a multiple of this (CPU)...
_PAD_MIN_FEATURES = 256  # ...when rows are this long: below, the product is cheap anyway
_CHUNK_ROWS = (1024, 4096, 8192)  # GPU: rows per partial product of A @ X (least, aim, most)


def sweep_rows(d: int, dtype: jnp.dtype = jnp.float32) -> int:
    """Rows per block when ``X`` with rows of ``d`` features of ``dtype`` is swept in
    blocks: ``min(1024, 16 MiB // row_bytes)``, at least 8, a multiple of 8, with
    ``row_bytes`` the size of a row in the dtype of the products (float32 for bfloat16
    data).

    Example:
      >>> sweep_rows(784), sweep_rows(3073), sweep_rows(3073, jnp.float64)
      (1024, 1024, 680)
    """
    low = jnp.dtype(dtype) == jnp.bfloat16
    row_bytes = d * (4 if low else jnp.dtype(dtype).itemsize)
    return max(8, min(_BLOCK_ROWS, _MAX_BLOCK_BYTES // row_bytes) // 8 * 8)


def block_rows(
    n: int, d: int, dtype: jnp.dtype = jnp.float32, *, platform: str | None = None
) -> int:
    """Rows per block of the one-pass sweep over ``X`` ``[n, d]`` of ``dtype``; ``n`` means
    one block.

    :func:`sweep_rows` rows, or one block when ``n`` is at most that, when a float ``X``
    holds at most ``128 MiB`` or has rows of at least ``6 KiB``, or when ``platform``
    (default: ``jax.default_backend()``) is not ``"cpu"``. bfloat16 data is always swept
    in blocks, so it is widened block by block, never as a whole.

    Why: XLA:CPU copies each block out of ``X`` before its products, so the sweep reads
    ``X`` from memory once but pays a copy per block, while the two-pass form reads it
    twice; the second read is cheap while ``X`` sits in the last-level cache, and long rows
    run their products at speed on whole matrices. The thresholds come from
    ``experiments/bench_gradient.py``, which prints each path's time and the rule's pick;
    rerun it to check them on another CPU.

    Example:
      >>> block_rows(60000, 784, platform="cpu"), block_rows(49000, 3073, platform="cpu")
      (1024, 49000)
      >>> block_rows(10000, 784, platform="cpu"), block_rows(10000, 3073, platform="cpu")
      (10000, 10000)
      >>> block_rows(4000, 40, platform="cpu"), block_rows(60000, 784, platform="gpu")
      (4000, 60000)
    """
    platform = jax.default_backend() if platform is None else platform
    rows = sweep_rows(d, dtype)
    if platform != "cpu" or n <= rows:
        return n
    if jnp.dtype(dtype) == jnp.bfloat16:
        return rows
    row_bytes = d * jnp.dtype(dtype).itemsize
    one_block = n * row_bytes <= _ONE_BLOCK_BYTES or row_bytes >= _LONG_ROW_BYTES
    return n if one_block else rows


def row_chunks(n: int, *, platform: str | None = None, devices: int | None = None) -> int:
    """Into how many equal row chunks :func:`rows_product` cuts ``X`` ``[n, D]``: on GPU
    (``platform``, default ``jax.default_backend()``) the divisor ``k`` of ``n`` whose
    chunks of ``n / k`` rows come nearest to 4096 within 1024..8192, elsewhere (or when
    ``n`` has no such divisor) 1. ``k`` is also a multiple of ``devices`` (default: the
    number of devices when ``platform`` is the default backend, else 1).

    Why: XLA:GPU runs a product ``[C, N] @ [N, D]`` with few rows ``C`` (the classes) and
    a long contraction ``N`` on too few thread blocks to use the card's bandwidth; split
    by hand into chunks of a few thousand rows, it runs as one batched product near the
    speed of a read of ``X`` (``experiments/bench_gpu.py``). Only divisors, so every chunk
    is a view of ``X`` (a remainder would be a slice, which XLA may copy); a multiple of
    the devices, so that an ``X`` laid out by rows over all of them (as
    :func:`svmjax.sharding.shard_rows` does) splits into whole chunks per device.

    Example:
      >>> gpu = {"platform": "gpu", "devices": 1}
      >>> row_chunks(20000, **gpu), row_chunks(200000, **gpu), row_chunks(8191, **gpu)
      (5, 50, 1)
      >>> row_chunks(20000, platform="gpu", devices=4), row_chunks(20000, platform="cpu")
      (4, 1)
    """
    default = jax.default_backend()
    platform = default if platform is None else platform
    if devices is None:
        devices = jax.device_count() if platform == default else 1
    least, aim, most = _CHUNK_ROWS
    if platform != "gpu" or n < 2 * least:
        return 1
    sizes = [
        r for r in range(least, min(most, n // 2) + 1) if n % r == 0 and (n // r) % devices == 0
    ]
    if not sizes:
        return 1
    return n // min(sizes, key=lambda r: abs(np.log(r / aim)))


def rows_product(A: jax.Array, X: jax.Array, *, chunks: int | None = None) -> jax.Array:
    """``A @ X`` ``[C, D]`` for ``A`` ``[C, N]`` and ``X`` ``[N, D]``: a contraction over
    the rows of ``X`` (the weight gradient ``M^T X``).

    With ``chunks = k > 1`` (default :func:`row_chunks`, so ``k > 1`` only on GPU) the rows
    are cut into ``k`` equal chunks (reshapes, no copy), their ``k`` partial products run
    as one batched product and are summed: the same sum in another order (float rounding
    only). ``k`` must divide ``N``.
    """
    n = X.shape[0]
    k = row_chunks(n) if chunks is None else chunks
    if k == 1:
        return A @ X
    if n % k:
        raise ValueError(f"rows_product: {k} chunks do not divide {n} rows")
    c, d = A.shape[0], X.shape[1]
    parts = jax.lax.dot_general(
        A.reshape(c, k, n // k), X.reshape(k, n // k, d), (((2,), (1,)), ((1,), (0,)))
    )  # [k, C, D]
    return jnp.sum(parts, axis=0)


class _Spec(NamedTuple):
    """Static (hashable) settings of one call."""

    loss: str
    squared: bool
    block: int
    x_dtype: str  # X's own dtype (the dtype of its cotangent)
    options: tuple  # the loss's extra hyperparameters, as sorted (name, value) pairs


class _Want(NamedTuple):
    """Which cotangents the forward sweep must prepare (static)."""

    params: bool  # dW, db
    scores: bool  # M rows, for dX
    margin: bool
    class_weights: bool


def _on_cpu() -> bool:
    return jax.default_backend() == "cpu"


def _scores(Xb: jax.Array, W: jax.Array, b: jax.Array) -> jax.Array:
    """``Xb @ W + b`` ``[B, C]``.

    On CPU, with ``D >= 256`` features and ``C`` less than 8 short of a multiple of 16
    (e.g. 10 classes), the product is taken on ``W`` padded with zero columns to that
    multiple, then sliced back: XLA:CPU's matrix kernel runs such a product faster than
    the unpadded one (AVX-512 and AVX2 alike), while padding further (3 classes to 16)
    costs more than it saves. The real scores are the same up to float rounding (the
    kernel may split the sums differently for 16 columns; bit-identical at some shapes).
    """
    n_features, n_classes = W.shape
    pad = -n_classes % _CLASS_TILE
    if 0 < pad < _CLASS_TILE // 2 and n_features >= _PAD_MIN_FEATURES and _on_cpu():
        return (Xb @ jnp.pad(W, ((0, 0), (0, pad))))[:, :n_classes] + b[None, :]
    return Xb @ W + b[None, :]


def _block(spec, W, b, Xb, yb, margin, class_weights, ct, want):
    """One row block: per-example losses and (as wanted) its gradient contributions."""
    Xb = Xb.astype(W.dtype)  # bfloat16 storage: widened in cache, products in W's dtype
    S = _scores(Xb, W, b)
    loss_fn = functools.partial(
        registry.get(spec.loss).analytic, labels=yb, squared=spec.squared, **dict(spec.options)
    )
    if not any(want):
        return loss_fn(S, margin=margin, class_weights=class_weights), None, {}
    # The analytic loss's own VJP gives the per-example losses and the rows of M (and,
    # when asked for, the margin and class-weight cotangents): the hinge rules live in
    # svmjax.analytic only.
    hyper = {"margin": margin, "class_weights": class_weights}
    wanted = {k: v for k, v in hyper.items() if getattr(want, k)}
    fixed = {k: v for k, v in hyper.items() if not getattr(want, k)}
    L, vjp = jax.vjp(lambda s, h: loss_fn(s, **h, **fixed), S, wanted)
    M, parts = vjp(ct)
    if want.params:
        parts["Gt"] = rows_product(M.T, Xb)  # [C, D]: the fast layout (chunked on GPU)
        parts["db"] = jnp.sum(M, axis=0)
    return L, (M if want.scores else None), parts


def _sweep(spec, W, b, X, y, margin, class_weights, weights, scale, want):
    """All row blocks: per-example losses [N], M [N, C] (if wanted), summed parts."""
    n = X.shape[0]
    ct = None  # each example's loss cotangent, a_i / sum(a)
    if scale is not None:
        ct = scale * (jnp.ones((n,), W.dtype) if weights is None else weights)

    def run(rows, X=X):  # rows: takes some rows of an array
        Xb, yb, ctb = jax.tree.map(rows, (X, y, ct))
        return _block(spec, W, b, Xb, yb, margin, class_weights, ctb, want)

    if spec.block >= n:
        return run(lambda a: a)
    n_blocks, rest = divmod(n, spec.block)

    def body(carry, i):
        parts, X = carry
        # X rides in the carry behind a barrier, so XLA sees it change and cannot hoist
        # work on it out of the loop: on CPU it would convert (and write) all of a
        # bfloat16 X to float32 first, since it has no bfloat16 dynamic slice.
        X = jax.lax.optimization_barrier(X)
        L, M, new = run(lambda a: jax.lax.dynamic_slice_in_dim(a, i * spec.block, spec.block), X)
        return (jax.tree.map(jnp.add, parts, new), X), (L, M)

    shapes = jax.eval_shape(lambda: run(lambda a: a[: spec.block])[2])
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    (parts, _), (L, M) = jax.lax.scan(body, (zeros, X), jnp.arange(n_blocks))
    L, M = jax.tree.map(lambda a: a.reshape(n_blocks * spec.block, *a.shape[2:]), (L, M))
    if rest:
        L_rest, M_rest, new = run(lambda a: a[n_blocks * spec.block :])
        L, M = jax.tree.map(lambda a, r: jnp.concatenate([a, r]), (L, M), (L_rest, M_rest))
        parts = jax.tree.map(jnp.add, parts, new)
    return L, M, parts


def _reduce(L, weights, total):
    return jnp.sum(L if weights is None else weights * L) / total


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _mean_loss(spec, W, b, X, y, margin, class_weights, weights):
    n = X.shape[0]
    total = n if weights is None else jnp.sum(weights)
    want = _Want(False, False, False, False)
    L, _, _ = _sweep(spec, W, b, X, y, margin, class_weights, weights, None, want)
    return _reduce(L, weights, total)


def _mean_loss_fwd(spec, W, b, X, y, margin, class_weights, weights):
    perturbed = jax.tree.map(lambda p: p.perturbed, (W, b, X, margin, class_weights, weights))
    W, b, X, y, margin, class_weights, weights = jax.tree.map(
        lambda p: p.value, (W, b, X, y, margin, class_weights, weights)
    )
    leaves = jax.tree.leaves
    want = _Want(
        params=perturbed[0] or perturbed[1],
        scores=perturbed[2],
        margin=perturbed[3],
        class_weights=any(leaves(perturbed[4])),
    )
    n = X.shape[0]
    total = jnp.asarray(n, W.dtype) if weights is None else jnp.sum(weights)
    L, M, parts = _sweep(spec, W, b, X, y, margin, class_weights, weights, 1 / total, want)
    value = _reduce(L, weights, total)
    res = {"W": W}
    if want.params:
        # The barrier keeps XLA from folding the transpose into the slow X.T @ M product.
        res["dW"] = jax.lax.optimization_barrier(parts["Gt"]).T
        res["db"] = parts["db"]
    if want.scores:
        res["M"] = M
    if want.margin:
        res["d_margin"] = parts["margin"]
    if want.class_weights:
        res["d_cw"] = parts["class_weights"]
    if any(leaves(perturbed[5])):
        res["d_weights"] = (L - value) / total
    return value, res


def _mean_loss_bwd(spec, res, g):
    if isinstance(g, jax.custom_derivatives.SymbolicZero):  # output not differentiated
        return (None,) * 7

    def scaled(key):
        return (g * res[key]).astype(res[key].dtype) if key in res else None

    d_X = None
    if "M" in res:
        d_X = (g * (res["M"] @ res["W"].T)).astype(spec.x_dtype)
    return (
        scaled("dW"),
        scaled("db"),
        d_X,
        None,
        scaled("d_margin"),
        scaled("d_cw"),
        scaled("d_weights"),
    )


# symbolic_zeros: the forward sweep prepares only the cotangents of what is differentiated
# (dW and db; M for dX; the margin, class-weight and sample-weight cotangents on request).
_mean_loss.defvjp(_mean_loss_fwd, _mean_loss_bwd, symbolic_zeros=True)


def mean_loss(
    params: dict[str, jax.Array],
    X: ArrayLike,
    y: ArrayLike,
    *,
    loss: str = "weston_watkins",
    margin: ArrayLike = 1.0,
    squared: bool = False,
    class_weights: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    block: int | None = None,
    loss_options: Mapping[str, Any] | None = None,
) -> jax.Array:
    r"""(Weighted) mean per-example loss of the linear model, with the fused analytic gradient.

    .. math::

        J(W, b) = \frac{\sum_i a_i L(x_i W + b,\ y_i)}{\sum_i a_i}

    The data term of :func:`svmjax.linear.objective` (which adds the L2 penalty), with
    the values and gradients of :mod:`svmjax.analytic`, computed in one pass over ``X``
    (see the module docstring).

    Args:
      params: ``{"W": [D, C], "b": [C]}``.
      X: float ``[N, D]``; ``bfloat16`` storage is allowed (products accumulate in the
        parameters' dtype).
      y: integer class indices ``[N]`` in ``[0, C)``.
      loss: a registered loss name (:func:`svmjax.registry.names`).
      margin, squared, class_weights: passed to the loss (see :mod:`svmjax.losses`).
      sample_weight: optional non-negative ``[N]`` weights :math:`a_i` (default 1).
      block: rows per block of the sweep; default :func:`block_rows`. ``N`` or more
        means one block (use it for an ``X`` sharded over several CPU devices: slicing a
        sharded ``X`` inside a loop would make XLA gather it).
      loss_options: the loss's extra keyword hyperparameters (static Python values).

    Returns:
      A scalar of the parameters' dtype (promoted with ``X``'s, unless ``X`` is
      ``bfloat16``). A label outside ``[0, C)`` raises when the labels are concrete, and
      makes the result (and its gradient) NaN under ``jit``. No forward mode
      (``custom_vjp``).

    Example:
      >>> params = {"W": jnp.array([[1.0, -1.0], [0.5, 0.0]]), "b": jnp.zeros(2)}
      >>> X, y = jnp.array([[1.0, 2.0], [0.0, 1.0]]), jnp.array([0, 1])
      >>> g = jax.grad(mean_loss)(params, X, y)
      >>> float(mean_loss(params, X, y)), g["W"].tolist(), g["b"].tolist()
      (0.75, [[0.0, 0.0], [0.5, -0.5]], [0.5, -0.5])
    """
    options = registry.loss_options(loss, loss_options)
    X, y = jnp.asarray(X), jnp.asarray(y)
    W, b = jnp.asarray(params["W"]), jnp.asarray(params["b"])
    if X.ndim != 2 or W.ndim != 2 or X.shape[1] != W.shape[0] or b.shape != W.shape[1:]:
        raise ValueError(
            f"X [N, D], W [D, C] and b [C] do not match: X {X.shape}, W {W.shape}, b {b.shape}"
        )
    if not jnp.issubdtype(X.dtype, jnp.floating):
        raise TypeError(f"X must be floating point, got dtype {X.dtype}")
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise TypeError(f"labels must be integer class indices in [0, C), got dtype {y.dtype}")
    n, n_classes = X.shape[0], W.shape[1]
    if y.shape != (n,):
        raise ValueError(f"labels shape {y.shape} does not match X shape {X.shape}")
    if is_concrete(y) and n:
        check_labels(np.asarray(y), n_classes)
    low = X.dtype == jnp.bfloat16
    dtype = jnp.result_type(W, b) if low else jnp.result_type(X, W, b)
    W, b = W.astype(dtype), b.astype(dtype)
    if not low:
        X = X.astype(dtype)
    margin = jnp.asarray(margin, dtype)
    if class_weights is not None:
        class_weights = jnp.asarray(class_weights, dtype)
    if sample_weight is not None:
        sample_weight = jnp.asarray(sample_weight, dtype)
        if sample_weight.shape != (n,):
            raise ValueError(
                f"sample_weight must have shape {(n,)} (one per example), got {sample_weight.shape}"
            )
    rows = block_rows(n, X.shape[1], X.dtype) if block is None else int(block)
    if rows < 1:
        raise ValueError(f"block must be a positive number of rows, got {block}")
    spec = _Spec(loss, bool(squared), min(rows, n), jnp.dtype(X.dtype).name, options)
    return _mean_loss(spec, W, b, X, y, margin, class_weights, sample_weight)

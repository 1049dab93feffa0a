"""Internal: the checks every svmjax entry point shares, one message per kind of mistake.

Public entry points call these once, at the boundary, never inside a jitted hot path.

* Dtypes, labels and class weights: :func:`check_dtypes`, :func:`check_labels`,
  :func:`check_class_weight_values`, :func:`class_weights`; the losses' trace-time check
  :func:`check_loss_inputs`, and its in-``jit`` twins for label values,
  :func:`poison_invalid` (NaN scores) and :func:`mark_invalid` (label ``-1``).
* Options: :func:`scalar`, :func:`count`, :func:`check_k`, :func:`check_tau`,
  :func:`as_key`, :func:`check_mesh`.

:func:`svmjax.validation.validate` is the public, eager check of a whole batch.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike


def is_concrete(*xs: object) -> bool:
    """True when none of ``xs`` is a JAX tracer (so their values can be inspected)."""
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def first_index(mask: np.ndarray) -> tuple[int, ...]:
    """The index of the first True entry of ``mask``."""
    return tuple(int(i) for i in np.argwhere(mask)[0])


def position(index: tuple[int, ...]) -> str:
    """``index`` as a message names it: ``3`` for a vector, ``(2, 1)`` otherwise."""
    return str(index[0]) if len(index) == 1 else str(index)


def dtype_of(x: object) -> np.dtype:
    """The dtype of ``x`` as given (not after JAX's conversion); no copy of a device array."""
    dtype = getattr(x, "dtype", None)
    return np.asarray(x).dtype if dtype is None else np.dtype(dtype)


def check_dtypes(scores_or_X: object, labels: object, name: str = "scores") -> None:
    """Raise ``TypeError`` unless ``scores_or_X`` is floating point and ``labels`` integer.

    The dtypes named are the caller's own (an ``int64`` NumPy array is reported as
    ``int64``, not as the ``int32`` JAX would convert it to).
    """
    x_dtype, y_dtype = dtype_of(scores_or_X), dtype_of(labels)
    if not jnp.issubdtype(x_dtype, jnp.floating):
        raise TypeError(f"{name} must be floating point, got dtype {x_dtype}")
    if not jnp.issubdtype(y_dtype, jnp.integer):
        hint = " (convert with labels.astype(int))" if jnp.issubdtype(y_dtype, jnp.floating) else ""
        raise TypeError(
            f"labels must be integer class indices in [0, C), got dtype {y_dtype}" + hint
        )


def check_labels(y: np.ndarray, n_classes: int) -> None:
    """Raise ``ValueError`` naming the first label outside ``[0, n_classes)``."""
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        index = first_index(bad)
        raise ValueError(
            f"label {y[index]} at position {position(index)} is outside [0, {n_classes}) "
            f"({int(bad.sum())} bad label(s) in all)"
        )


def check_class_weight_values(w: np.ndarray) -> None:
    """Raise ``ValueError`` naming the first class weight that is negative or non-finite."""
    bad = np.flatnonzero(~(np.isfinite(w) & (w >= 0)))
    if bad.size:
        raise ValueError(
            f"class_weights must be finite and >= 0, got class_weights[{bad[0]}] = {w[bad[0]]}"
        )


def class_weights(w: ArrayLike | None, n_classes: int) -> np.ndarray | None:
    """Checked class weights ``[n_classes]`` as a NumPy array (``None`` stays)."""
    if w is None:
        return None
    w = np.asarray(w)
    if w.shape != (n_classes,):
        raise ValueError(
            f"class_weights must have shape ({n_classes},) (one weight per class), "
            f"got shape {w.shape}"
        )
    if not np.issubdtype(w.dtype, np.number) or np.iscomplexobj(w):
        raise TypeError(f"class_weights must be real numbers, got dtype {w.dtype}")
    check_class_weight_values(w)
    return w


# ------------------------------------------------------------------------- the losses' inputs


def check_loss_inputs(
    scores: ArrayLike,
    labels: ArrayLike,
    margin: ArrayLike,
    class_weights: ArrayLike | None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array | None]:
    """Trace-time checks of a loss call; returns the inputs as arrays.

    Dtypes and shapes are checked always (they are static). Label and class-weight
    *values* (labels in ``[0, C)``; weights finite and ``>= 0``) are checked only when they
    are concrete (eager calls); inside ``jit`` see :func:`poison_invalid` and
    :func:`mark_invalid`. The margin is not checked: any finite margin defines a valid
    loss (``margin=0`` is the multiclass perceptron criterion), and the training entry
    points, which need a positive one, check it there. Non-finite scores are not checked
    either: they propagate (a NaN score gives a NaN loss), as in any ``jnp`` function;
    :func:`svmjax.validation.validate` rejects them.
    """
    check_dtypes(scores, labels, "scores")  # the caller's dtypes, before JAX converts them
    scores = jnp.asarray(scores)
    labels_in = labels
    labels = jnp.asarray(labels)
    if scores.ndim < 1:
        raise ValueError("scores need a class axis [..., C], got a 0-d array (a scalar)")
    if labels.shape != scores.shape[:-1]:
        raise ValueError(
            f"labels shape {labels.shape} does not match scores shape {scores.shape}: "
            f"expected labels of shape {scores.shape[:-1]}"
        )
    n_classes = scores.shape[-1]
    if n_classes < 2:
        raise ValueError(f"need at least 2 classes, got scores with {n_classes} column(s)")
    margin = jnp.asarray(margin, dtype=scores.dtype)
    if margin.ndim != 0:
        raise ValueError(f"margin must be a scalar, got shape {margin.shape}")
    # Values are read from the caller's arrays: inside a trace, jnp.asarray of a NumPy
    # array closed over is a tracer, although the values are known.
    if class_weights is not None:
        weights_in = class_weights
        with np.errstate(over="ignore"):  # a weight too large for the type: inf, named below
            class_weights = jnp.asarray(class_weights, dtype=scores.dtype)
        if class_weights.shape != (n_classes,):
            raise ValueError(
                f"class_weights must have shape ({n_classes},) (one weight per class), "
                f"got shape {class_weights.shape}"
            )
        if is_concrete(weights_in):  # a negative weight rewards violating the margin
            with np.errstate(over="ignore"):
                values = np.asarray(weights_in).astype(class_weights.dtype)
            check_class_weight_values(values)
    if is_concrete(labels_in) and labels.size:
        check_labels(np.asarray(labels_in), n_classes)
    return scores, labels, margin, class_weights


def poison_invalid(
    scores: jax.Array, labels: jax.Array, class_weights: jax.Array | None = None
) -> jax.Array:
    """Return ``scores`` with NaN rows for every example whose label is outside ``[0, C)``
    or whose class weight (``class_weights[label]``) is negative or non-finite.

    The in-``jit`` twin of the eager ``ValueError`` of :func:`check_loss_inputs` (JAX
    clamps an out-of-range index instead of raising, so a bad label would otherwise give a
    finite, plausible loss). Multiplying (rather than selecting) makes the NaN flow into the
    gradient as well: such an example gets a NaN loss *and* a NaN gradient. Valid examples
    are multiplied by exactly 1.
    """
    valid = _valid_examples(labels, scores.shape[-1], class_weights)
    factor = jnp.where(valid, jnp.ones((), scores.dtype), jnp.full((), jnp.nan, scores.dtype))
    return scores * factor[..., None]


def mark_invalid(
    labels: jax.Array, n_classes: int, class_weights: jax.Array | None = None
) -> jax.Array:
    """Return ``labels`` with ``-1`` for every example :func:`poison_invalid` would poison
    (label outside ``[0, n_classes)``, class weight negative or non-finite).

    The per-example twin of :func:`poison_invalid`, for :mod:`svmjax.analytic`: its
    forward rules give an example labelled ``-1`` a NaN loss, and their backward rules a NaN
    gradient row (they guard on the NaN loss), so no score is touched. A select per
    example instead of a multiplication per score: under ``jit`` XLA:CPU repeats that
    multiplication, and the label test behind it, in every kernel that reads the scores.
    The labels come back as ``int32`` (a valid label is below ``n_classes``): ``-1`` in an
    unsigned type would wrap to a large, valid-looking number.
    """
    valid = _valid_examples(labels, n_classes, class_weights)
    return jnp.where(valid, labels.astype(jnp.int32), -1)


def _valid_examples(
    labels: jax.Array, n_classes: int, class_weights: jax.Array | None
) -> jax.Array:
    """Per example: label in ``[0, n_classes)`` and, with ``class_weights``, its class
    weight finite and ``>= 0`` (what :func:`poison_invalid` and :func:`mark_invalid` test)."""
    valid = (labels >= 0) & (labels < n_classes)
    if class_weights is not None:
        w = jnp.take(class_weights, jnp.clip(labels, 0, n_classes - 1))
        valid = valid & jnp.isfinite(w) & (w >= 0)
    return valid


# ------------------------------------------------------------------------------- options


def scalar(name: str, value: Any, *, positive: bool) -> float:
    """``value`` as a Python float, checked: finite and ``> 0`` (``positive``) or ``>= 0``."""
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {np.shape(value)}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(number) or (number <= 0 if positive else number < 0):
        raise ValueError(
            f"{name} must be a finite number {'>' if positive else '>='} 0, got {value}"
        )
    return number


def count(name: str, value: object) -> int:
    """``value`` as a Python int, checked ``>= 1``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_k(k: int, n_classes: int, upper: int) -> int:
    """``k`` of a top-k loss or metric as an ``int`` in ``[1, upper]``; ``ValueError``
    otherwise."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= upper:
        raise ValueError(f"k must be an integer in [1, {upper}] for {n_classes} classes, got {k!r}")
    return k


def check_tau(tau: float) -> float:
    """A temperature ``tau`` as a Python float > 0; ``ValueError`` otherwise."""
    tau = float(tau)
    if not 0 < tau < float("inf"):
        raise ValueError(f"tau must be a finite Python float > 0, got {tau}")
    return tau


def as_key(key: object) -> jax.Array:
    """A single typed PRNG key from a typed key (``jax.random.key(seed)``) or a legacy raw
    key (``jax.random.PRNGKey(seed)``, ``uint32`` data); both give the same key, so the
    same seed gives the same bits either way.

    Example:
      >>> import jax
      >>> bool(jax.random.key_data(as_key(jax.random.PRNGKey(3)))
      ...      .tolist() == jax.random.key_data(jax.random.key(3)).tolist())
      True
    """
    if isinstance(key, jax.Array | np.ndarray) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise TypeError(f"key must be a single key, got an array of keys of shape {key.shape}")
        return jnp.asarray(key)
    if isinstance(key, jax.Array | np.ndarray) and key.dtype == np.uint32:
        impl = jax.random.key_impl(jax.random.key(0))
        expected = jax.random.key_data(jax.random.key(0)).shape
        if key.shape != expected:
            raise TypeError(
                f"a raw key must be uint32 of shape {expected} (jax.random.PRNGKey(seed)), "
                f"got shape {key.shape}"
            )
        return jax.random.wrap_key_data(jnp.asarray(key), impl=impl)
    raise TypeError(
        "key must be a JAX PRNG key: jax.random.key(seed) or jax.random.PRNGKey(seed), got "
        + (f"an array of dtype {dtype}" if (dtype := getattr(key, "dtype", None)) else repr(key))
    )


def check_mesh(mesh: object) -> None:
    """Raise ``TypeError`` unless ``mesh`` is ``None`` or a ``jax.sharding.Mesh``."""
    if mesh is not None and not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(
            "mesh must be a jax.sharding.Mesh (e.g. svmjax.sharding.data_mesh()) or None, "
            f"got {type(mesh).__name__}"
        )

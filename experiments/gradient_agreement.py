"""Analytic vs autodiff vs numeric gradients, for every loss variant, off kinks and at kinks.

Off kinks: the agreement table of :func:`svmjax.gradcheck.compare` (float32 and float64).
At constructed kinks: the analytic (strict ``> 0``, lowest-index argmax) and autodiff
(``jnp.maximum`` 1/2, ``jnp.max`` averaging) gradients differ; both are valid subgradients.
The script shows each pair, counts violations of the subgradient inequality
``f(z) >= f(s) + <g, z - s>`` over random ``z`` (zero expected for both), and plots a 1-D
slice of each loss through its kink with the two supporting lines.

    python experiments/gradient_agreement.py [--out results/gradient_agreement]
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from common import markdown_table, write

from svmjax import analytic, gradcheck, losses, registry


@dataclasses.dataclass
class Config:
    out: str = "results/gradient_agreement"
    seed: int = 0
    n: int = 200
    d: int = 20
    c: int = 10
    num_z: int = 2000
    dtypes: tuple[str, ...] = ("float32", "float64")
    squared: tuple[bool, ...] = (False, True)
    losses: tuple[str, ...] = ()  # empty: every registered loss


# A point exactly at a kink (or tie) for each loss, with labels.
KINKS = {
    "weston_watkins": ([[2.0, 1.0, -5.0]], [0], "v_1 = 1 - 2 + 1 = 0"),
    "crammer_singer": ([[0.0, 3.0, 1.0, 3.0]], [0], "classes 1 and 3 tie for the max"),
    "one_vs_rest": ([[1.0, -1.0, -3.0]], [0], "margin - t_j s_j = 0 for j = 0, 1"),
}


def _at_kink(f, s, z, direction, t) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``f``'s gradient ``g`` at ``s``, how many of the candidates ``z`` break
    ``f(z) >= f(s) + <g, z - s>`` (beyond float64 rounding), and ``f`` along
    ``s + t * direction``: one compiled program (op by op, seconds of compilation)."""

    @jax.jit
    def run(s, z, direction, t):
        g = jax.grad(f)(s)
        lower = f(s) + jnp.sum(g[None] * (z - s[None]), axis=(1, 2))
        violations = jnp.sum(jax.vmap(f)(z) < lower - 1e-12)
        return g, violations, jax.vmap(lambda t: f(s + t * direction))(t)

    return run(s, z, direction, t)


def _plot(kink_rows: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(kink_rows), figsize=(4 * len(kink_rows), 3.2))
    for ax, row in zip(axes, kink_rows, strict=True):
        t = np.asarray(row["t"])
        ax.plot(t, row["slice"], color="k", lw=2, label="loss along d")
        for name, style in (("analytic", "--"), ("autodiff", ":")):
            ax.plot(
                t,
                row["slice"][len(t) // 2] + t * row[f"{name}_slope"],
                style,
                label=f"{name}: slope {row[f'{name}_slope']:.2f}",
            )
        ax.set(title=f"{row['loss']}\n({row['where']})", xlabel="t  (s + t d)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _kink_row(name: str, scores, labels, where: str, key: jax.Array, num_z: int) -> dict:
    """Both gradients at one kink, their violations, and a 1-D slice through the kink."""
    s, y = jnp.asarray(scores, jnp.float64), jnp.asarray(labels)
    direction_key, z_key = jax.random.split(key)
    direction = jax.random.normal(direction_key, s.shape, jnp.float64)
    scales = jnp.geomspace(1e-4, 10.0, num_z)[:, None, None]
    z = s[None] + scales * jax.random.normal(z_key, (num_z, *s.shape), s.dtype)
    t = jnp.linspace(-1.0, 1.0, 201)
    row = {"loss": name, "where": where, "scores": scores, "labels": labels, "t": t.tolist()}
    for module_name, module in (("analytic", analytic), ("autodiff", losses)):

        def f(x, module=module):
            return jnp.sum(getattr(module, name)(x, y))

        g, violations, along = _at_kink(f, s, z, direction, t)
        row[f"{module_name}_gradient"] = np.asarray(g).tolist()
        row[f"{module_name}_slope"] = float(jnp.sum(g * direction))
        row[f"{module_name}_violations"] = int(violations)
        row["slice"] = np.asarray(along).tolist()
    return row


def main(config: Config) -> dict:
    key = jax.random.key(config.seed)
    rows = [
        gradcheck.compare(
            loss, n=config.n, d=config.d, c=config.c, key=key, dtype=dtype, squared=squared
        )
        for dtype in config.dtypes
        for loss in config.losses or registry.names()
        for squared in config.squared
    ]

    with gradcheck.x64():
        kink_rows = [
            _kink_row(name, *point, jax.random.fold_in(key, i), config.num_z)
            for i, (name, point) in enumerate(KINKS.items())
        ]

    table = gradcheck.format_table(rows)
    kink_table = markdown_table(
        [
            "loss",
            "kink",
            "analytic gradient",
            "autodiff gradient",
            "violations (analytic / autodiff)",
        ],
        [
            [
                r["loss"],
                r["where"],
                r["analytic_gradient"][0],
                r["autodiff_gradient"][0],
                f"{r['analytic_violations']} / {r['autodiff_violations']} of {config.num_z}",
            ]
            for r in kink_rows
        ],
    )
    markdown = "\n".join(
        [
            "# Gradient agreement",
            "",
            f"Off kinks: max-norm relative errors on random {config.n}x{config.d}x{config.c} "
            f"linear problems (seed {config.seed}); numeric = float64 centred differences.",
            "",
            "```",
            table,
            "```",
            "",
            "At constructed kinks, the two rules pick different subgradients; both satisfy",
            f"f(z) >= f(s) + <g, z - s> for all {config.num_z} random z:",
            "",
            kink_table,
            "",
            "![slices through the kinks](kinks.png)",
        ]
    )
    out = write(
        config.out,
        {
            "config": dataclasses.asdict(config),
            "table": rows,
            "kinks": [{k: v for k, v in r.items() if k not in ("t", "slice")} for r in kink_rows],
        },
        markdown,
    )
    _plot(kink_rows, out / "kinks.png")
    return {"table": rows, "kinks": kink_rows}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=Config.out)
    parser.add_argument("--seed", type=int, default=Config.seed)
    args = parser.parse_args()
    main(Config(out=args.out, seed=args.seed))

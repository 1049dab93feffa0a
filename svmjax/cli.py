"""The ``svmjax`` command line."""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp

from svmjax import gradcheck, linear


def _agreement_rows(key: jax.Array) -> list[dict]:
    rows = []
    for dtype in (jnp.float32, jnp.float64):
        for loss in linear.LOSSES:
            for squared in (False, True):
                rows.append(
                    gradcheck.compare(
                        loss, n=200, d=20, c=10, key=key, dtype=dtype, squared=squared
                    )
                )
    return rows


def _gradcheck(args: argparse.Namespace) -> int:
    print(gradcheck.format_table(_agreement_rows(jax.random.key(args.seed))))
    return 0


def _demo(args: argparse.Namespace) -> int:
    print("Gradient agreement: analytic custom_vjp vs jax.grad autodiff vs finite differences")
    print("(largest entrywise relative error over W and b; random 200x20x10 problems)\n")
    return _gradcheck(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="svmjax", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, run, text in [
        ("demo", _demo, "the main job: gradient agreement table (training comes next)"),
        ("gradcheck", _gradcheck, "analytic vs autodiff vs numeric gradients, every loss"),
    ]:
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        sub.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

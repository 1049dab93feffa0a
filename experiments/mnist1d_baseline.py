"""MNIST-1D baselines: the paper's linear model, and a small MLP trained with the analytic
Weston–Watkins loss vs softmax cross-entropy — the SVM loss works as a head for any model.

The MNIST-1D paper (Greydanus & Kobak, 2020/2024) reports about 32% test accuracy for a
linear model and about 68% for its MLP. The MLP here is plain JAX (two hidden ReLU layers),
trained with optax Adam on minibatches inside one jitted ``lax.scan`` per epoch; the only
difference between the two MLP runs is the loss head.

    python experiments/mnist1d_baseline.py [--out results/mnist1d_baseline]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from common import header, markdown_table, write

from svmjax import analytic, data, linear, optim, train


@dataclasses.dataclass
class Config:
    out: str = "results/mnist1d_baseline"
    seeds: tuple[int, ...] = (0, 1, 2)
    linear_epochs: int = 100
    linear_lr: float = 0.003
    hidden: int = 100
    mlp_epochs: int = 170  # 170 x 36 steps ~ the paper's 6000 steps of batch 100
    mlp_lr: float = 1e-2
    mlp_batch_size: int = 100
    weight_decay: float = 0.0


def init_mlp(key: jax.Array, sizes: list[int]) -> list[dict[str, jax.Array]]:
    """He-initialised dense layers ``[{"W": [m, n], "b": [n]}, ...]``."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {"W": jax.random.normal(k, (m, n)) * jnp.sqrt(2.0 / m), "b": jnp.zeros(n)}
        for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def mlp_scores(params: list[dict[str, jax.Array]], X: jax.Array) -> jax.Array:
    """ReLU hidden layers, linear output scores ``[N, C]``."""
    for layer in params[:-1]:
        X = jax.nn.relu(X @ layer["W"] + layer["b"][None, :])
    return X @ params[-1]["W"] + params[-1]["b"][None, :]


def head_loss(head: str, scores: jax.Array, y: jax.Array) -> jax.Array:
    if head == "weston_watkins":
        return jnp.mean(analytic.weston_watkins(scores, y))  # analytic custom_vjp gradient
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(scores, y))


def train_mlp(ds: data.Dataset, head: str, seed: int, config: Config) -> float:
    """Train the MLP with one loss head; return its test accuracy."""
    init_key, order_key = jax.random.split(jax.random.key(seed))
    sizes = [ds.n_features, config.hidden, config.hidden, ds.n_classes]
    params = init_mlp(init_key, sizes)
    optimizer = optax.adamw(config.mlp_lr, weight_decay=config.weight_decay)
    X, y = jnp.asarray(ds.X_train), jnp.asarray(ds.y_train)
    steps = X.shape[0] // config.mlp_batch_size  # 3600 / 100: every example, every epoch

    def step(carry, index):
        params, opt_state = carry
        grads = jax.grad(lambda p: head_loss(head, mlp_scores(p, X[index]), y[index]))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    @functools.partial(jax.jit, donate_argnums=(0,))
    def epoch(carry, key):
        order = jax.random.permutation(key, X.shape[0])[: steps * config.mlp_batch_size]
        return jax.lax.scan(step, carry, order.reshape(steps, config.mlp_batch_size))[0]

    carry = (params, optimizer.init(params))
    for e in range(config.mlp_epochs):
        carry = epoch(carry, jax.random.fold_in(order_key, e))
    predictions = jnp.argmax(mlp_scores(carry[0], jnp.asarray(ds.X_test)), axis=-1)
    return float(np.mean(np.asarray(predictions) == ds.y_test))


def train_linear(ds: data.Dataset, seed: int, config: Config) -> float:
    params = linear.init(jax.random.key(seed), ds.n_features, ds.n_classes)
    params, _ = train.fit(
        params,
        ds.X_train,
        ds.y_train,
        key=jax.random.key(seed + 10),
        optimizer=optim.make_optimizer("momentum", config.linear_lr),
        reg=1e-4,
        epochs=config.linear_epochs,
        batch_size=256,
    )
    return float(np.mean(np.asarray(linear.predict(params, ds.X_test)) == ds.y_test))


def main(config: Config) -> dict:
    print(header(), flush=True)
    ds = data.load("mnist1d", key=jax.random.key(0))
    runs = {
        "linear, Weston–Watkins (svmjax.train.fit)": (lambda s: train_linear(ds, s, config), 0.32),
        "MLP, Weston–Watkins head (analytic)": (
            lambda s: train_mlp(ds, "weston_watkins", s, config),
            0.68,
        ),
        "MLP, softmax cross-entropy head": (
            lambda s: train_mlp(ds, "cross_entropy", s, config),
            0.68,
        ),
    }
    results, rows = {}, []
    for name, (run, paper) in runs.items():
        start = time.perf_counter()
        accuracies = [run(seed) for seed in config.seeds]
        seconds = time.perf_counter() - start
        results[name] = {"test_accuracy": accuracies, "paper": paper, "seconds": seconds}
        rows.append(
            [
                name,
                f"{np.mean(accuracies):.3f} ± {np.std(accuracies):.3f}",
                f"~{paper:.2f}",
                f"{seconds:.1f}",
            ]
        )
        print(" | ".join(rows[-1]), flush=True)
    markdown = "\n".join(
        [
            "# MNIST-1D baselines",
            "",
            f"{ds.description}; test accuracy mean ± std over seeds {list(config.seeds)}. "
            f"MLP: {ds.n_features}-{config.hidden}-{config.hidden}-{ds.n_classes} ReLU, "
            f"AdamW lr {config.mlp_lr:g}, batch {config.mlp_batch_size}, "
            f"{config.mlp_epochs} epochs.",
            "",
            markdown_table(["model", "test accuracy", "paper", "seconds (all seeds)"], rows),
        ]
    )
    write(config.out, {"config": dataclasses.asdict(config), "results": results}, markdown)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=Config.out)
    args = parser.parse_args()
    main(Config(out=args.out))

"""Training speed: ``svmjax.train.fit`` vs a Python loop of jitted steps vs torch, and the
cost of ``fit_grid`` against training the same configurations one after another.

All timings are measured in one process, after a warm-up run that pays for compilation, and
reported as the minimum and median over repeats; compare the *ratios*, not absolute times
(this is a shared, noisy machine). Writes ``results.json`` and ``results.md`` into the
output folder.

    python experiments/bench_train.py [--out results/bench_train] [--repeats 5] [--grid-repeats 15]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from common import environment, header, write

from svmjax import data, grid, linear, optim, train


@dataclasses.dataclass
class Config:
    out: str = "results/bench_train"
    dataset: str = "mnist1d"
    batch_size: int = 256
    epochs: int = 20
    learning_rate: float = 0.01
    repeats: int = 5
    grid_sizes: tuple[int, ...] = (1, 16, 64)
    grid_epochs: int = 10
    grid_repeats: int = 15  # interleaved rounds of the fit_grid timings
    torch: bool = True
    # fit_grid's scaling on random data of these shapes (N x D x C), 1 epoch, with a cost
    # model: 64 configurations sharing a seed share the gather and the products
    scaling_shapes: tuple[str, ...] = ("3600x40x10", "60000x784x10")
    scaling_sizes: tuple[int, int] = (1, 64)


def _timed(fn, repeats: int) -> dict[str, float]:
    fn()  # warm-up: compilation and caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"min": min(times), "median": statistics.median(times)}


def _python_loop(params, X, y, config: Config, steps_per_epoch: int):
    """The textbook alternative: one jitted step, a Python loop over batches and epochs."""
    optimizer = optax.sgd(config.learning_rate)

    @jax.jit
    def step(params, opt_state, X, y, index):
        grads = jax.grad(linear.objective)(params, X[index], y[index])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    n = X.shape[0]
    rng = np.random.default_rng(0)

    def run():
        p, s = params, optimizer.init(params)
        for _ in range(config.epochs):
            order = rng.permutation(n)
            for b in range(steps_per_epoch):
                p, s = step(p, s, X, y, order[b * config.batch_size : (b + 1) * config.batch_size])
        return jax.block_until_ready(p)

    return run


def _torch_loop(X, y, n_classes: int, config: Config, steps_per_epoch: int):
    import torch

    torch.set_num_threads(2)
    Xt, yt = torch.from_numpy(np.array(X)), torch.from_numpy(np.array(y, np.int64))
    n = Xt.shape[0]
    rng = np.random.default_rng(0)

    def run():
        W = torch.zeros(Xt.shape[1], n_classes, requires_grad=True)
        b = torch.zeros(n_classes, requires_grad=True)
        opt = torch.optim.SGD([W, b], lr=config.learning_rate)
        for _ in range(config.epochs):
            order = torch.from_numpy(rng.permutation(n))
            for i in range(steps_per_epoch):
                index = order[i * config.batch_size : (i + 1) * config.batch_size]
                scores = Xt[index] @ W + b
                # C * multi_margin_loss is the Weston-Watkins loss (torch divides by C).
                loss = n_classes * torch.nn.functional.multi_margin_loss(scores, yt[index])
                opt.zero_grad()
                loss.backward()
                opt.step()
        return W

    return run


def _cost_model(n: int, d: int, c: int, batch: int, k: int) -> dict:
    """Per epoch, for ``k`` configurations sharing the batches: flops of the two products
    per step (scores ``X_b W``, gradient ``M^T X_b``, each ``2 B D k C``) and of the
    epoch-end training accuracy (``2 N D k C``), bytes of ``X`` read per step (gather +
    two products) shared vs one configuration at a time, and the per-configuration
    elementwise work per step (score elements of the loss, parameters of the update)."""
    steps = -(-n // batch)
    flops = 2 * 2 * batch * d * c * k  # scores X_b W and gradient M^T X_b
    x_bytes = 3 * batch * d * 4  # gather (read and write) the batch, read it in each product
    return {
        "flops_per_step": flops,
        "accuracy_flops": 2 * n * d * c * k,
        "flops_per_epoch": flops * steps + 2 * n * d * c * k,
        "x_bytes_per_step_shared": x_bytes,
        "x_bytes_per_step_separate": k * x_bytes,
        "loss_elements_per_step": batch * c * k,
        "update_elements_per_step": (d * c + c) * k,
        "steps": steps,
    }


def _product_rate(n: int, d: int, c: int, batch: int, k: int) -> float:
    """Measured FLOP/s of the step's two products for ``k`` configurations (``X_b W``
    ``[B, D] x [D, k C]`` and ``M^T X_b``), jitted, best of a few: the cost model's price
    of a flop at this shape."""
    rng = np.random.default_rng(0)
    X_b = jnp.asarray(rng.standard_normal((batch, d), dtype=np.float32))
    W = jnp.asarray(rng.standard_normal((d, k * c), dtype=np.float32))

    @jax.jit
    def products(X_b, W):
        S = X_b @ W
        return jax.lax.optimization_barrier(S.T @ X_b)

    jax.block_until_ready(products(X_b, W))
    best = min(_once(lambda: jax.block_until_ready(products(X_b, W))) for _ in range(20))
    return 2 * 2 * batch * d * c * k / best


def _once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _scaling(config: Config) -> list[dict]:
    """``fit_grid`` time for each of ``scaling_sizes`` configurations, 1 epoch, interleaved,
    with the cost model: the products' share of the time at their measured rate."""
    rows = []
    for shape in config.scaling_shapes:
        n, d, c = (int(v) for v in shape.split("x"))
        rng = np.random.default_rng(0)
        X = jnp.asarray(rng.standard_normal((n, d), dtype=np.float32))
        y = jnp.asarray(rng.integers(0, c, n).astype(np.int32))
        params = linear.init(jax.random.key(1), d, c)

        def run(k, X=X, y=y, params=params):
            lrs = tuple(float(v) for v in np.geomspace(1e-3, 1e-1, k))
            result = grid.fit_grid(
                params, X, y, key=jax.random.key(4), learning_rates=lrs, regs=(0.0,),
                epochs=1, batch_size=config.batch_size,
            )  # fmt: skip
            return jax.block_until_ready(result.params)

        times: dict[int, list[float]] = {k: [] for k in config.scaling_sizes}
        for k in config.scaling_sizes:
            run(k)  # compile
        for _ in range(max(1, config.repeats // 2)):
            for k in config.scaling_sizes:
                times[k].append(_once(lambda k=k: run(k)))
        one, many = config.scaling_sizes
        row = {"shape": shape, "seconds": {str(k): min(t) for k, t in times.items()}}
        row["seconds_median"] = {str(k): statistics.median(t) for k, t in times.items()}
        row["ratio"] = min(times[many]) / min(times[one])
        row["ratio_median"] = statistics.median(times[many]) / statistics.median(times[one])
        row["cost_model"] = {str(k): _cost_model(n, d, c, config.batch_size, k) for k in times}
        for k in times:
            model = row["cost_model"][str(k)]
            rate = _product_rate(n, d, c, config.batch_size, k)
            model["product_gflops_per_s"] = rate / 1e9
            model["product_seconds"] = model["flops_per_epoch"] / rate
            model["product_share"] = model["product_seconds"] / min(times[k])
            model["other_seconds"] = min(times[k]) - model["product_seconds"]
        steps = row["cost_model"][str(one)]["steps"]
        row["gflops_per_s"] = {
            str(k): row["cost_model"][str(k)]["flops_per_step"] * steps / min(t) / 1e9
            for k, t in times.items()
        }
        rows.append(row)
    return rows


def main(config: Config) -> dict:
    print(header(), flush=True)
    ds = data.load(config.dataset, key=jax.random.key(0))
    X, y = jnp.asarray(ds.X_train), jnp.asarray(ds.y_train)
    n, steps_per_epoch = X.shape[0], -(-X.shape[0] // config.batch_size)
    steps = config.epochs * steps_per_epoch
    params = linear.init(jax.random.key(1), ds.n_features, ds.n_classes)
    optimizer = optim.make_optimizer("sgd", config.learning_rate)

    def fit_run():
        result, _ = train.fit(
            params,
            X,
            y,
            key=jax.random.key(2),
            optimizer=optimizer,
            epochs=config.epochs,
            batch_size=config.batch_size,
        )
        return jax.block_until_ready(result)

    compile_start = time.perf_counter()
    train.fit(
        params,
        X,
        y,
        key=jax.random.key(3),
        optimizer=optimizer,
        epochs=1,
        batch_size=config.batch_size,
    )
    compile_seconds = time.perf_counter() - compile_start

    per_run = {
        "fit (lax.scan epochs)": _timed(fit_run, config.repeats),
        "python loop of jitted steps": _timed(
            _python_loop(params, X, y, config, steps_per_epoch), config.repeats
        ),
    }
    if config.torch:
        try:
            per_run["torch (multi_margin_loss, SGD)"] = _timed(
                _torch_loop(X, y, ds.n_classes, config, steps_per_epoch), config.repeats
            )
        except ImportError:
            print("torch not installed: skipping (pip install 'svmjax[test]')")
    per_step = {name: {k: v / steps * 1e6 for k, v in t.items()} for name, t in per_run.items()}

    def grid_run(k):
        lrs = tuple(float(v) for v in np.geomspace(1e-3, 1e-1, k))
        result = grid.fit_grid(
            params,
            X,
            y,
            key=jax.random.key(4),
            learning_rates=lrs,
            regs=(0.0,),
            epochs=config.grid_epochs,
            batch_size=config.batch_size,
        )
        return jax.block_until_ready(result.params)

    # Interleaved rounds (every size once per round), after a warm-up of each: a run takes
    # a tenth of a second, so one noisy moment of a shared machine would skew a short series.
    rounds: dict[int, list[float]] = {k: [] for k in config.grid_sizes}
    for k in config.grid_sizes:
        grid_run(k)
    for _ in range(config.grid_repeats):
        for k in config.grid_sizes:
            rounds[k].append(_once(lambda k=k: grid_run(k)))
    grid_times = {k: {"min": min(t), "median": statistics.median(t)} for k, t in rounds.items()}

    k_max = max(config.grid_sizes)

    def sequential_run():
        for lr in np.geomspace(1e-3, 1e-1, k_max):
            result, _ = train.fit(
                params,
                X,
                y,
                key=jax.random.key(4),
                optimizer=optim.make_optimizer("sgd", float(lr)),
                epochs=config.grid_epochs,
                batch_size=config.batch_size,
            )
        jax.block_until_ready(result)

    sequential = _timed(sequential_run, 1)
    one = grid_times[min(config.grid_sizes)]["median"]
    one_min = grid_times[min(config.grid_sizes)]["min"]

    scaling = _scaling(config)
    results = {
        "grid_scaling": scaling,
        "config": dataclasses.asdict(config),
        "problem": {"n": n, "d": ds.n_features, "c": ds.n_classes, "steps": steps},
        "compile_seconds_first_fit": compile_seconds,
        "per_step_us": per_step,
        "fit_grid_seconds": {str(k): v for k, v in grid_times.items()},
        "fit_grid_cost_vs_one_config": {str(k): v["median"] / one for k, v in grid_times.items()},
        "fit_grid_cost_vs_one_config_min": {
            str(k): v["min"] / one_min for k, v in grid_times.items()
        },
        f"sequential_{k_max}_fits_seconds": sequential,
        f"sequential_{k_max}_cost_vs_one_grid_config": sequential["median"] / one,
    }

    fit_median = per_step["fit (lax.scan epochs)"]["median"]
    lines = [
        f"# Training speed on {config.dataset} ({n}x{ds.n_features}x{ds.n_classes}, "
        f"batch {config.batch_size}, {steps} steps; {environment()['device']})",
        "",
        "| method | µs/step (min) | µs/step (median) | median vs fit |",
        "|---|---|---|---|",
    ]
    for name, t in per_step.items():
        lines.append(
            f"| {name} | {t['min']:.1f} | {t['median']:.1f} | {t['median'] / fit_median:.2f}× |"
        )
    lines += [
        "",
        f"First fit (1 epoch) including compilation: {compile_seconds:.2f} s.",
        "",
        f"| fit_grid configs ({config.grid_epochs} epochs, {config.grid_repeats} interleaved "
        "rounds) | seconds (median) | cost vs 1 config (median) | seconds (min) | "
        "cost vs 1 config (min) |",
        "|---|---|---|---|---|",
    ]
    for k, t in grid_times.items():
        lines.append(
            f"| {k} | {t['median']:.3f} | {t['median'] / one:.1f}× | {t['min']:.3f} | "
            f"{t['min'] / one_min:.1f}× |"
        )
    lines.append(
        f"| {k_max} sequential `fit` calls | {sequential['median']:.3f} | "
        f"{sequential['median'] / one:.1f}× | {sequential['min']:.3f} | "
        f"{sequential['min'] / one_min:.1f}× |"
    )
    one, many = config.scaling_sizes
    lines += [
        "",
        f"fit_grid, {many} configurations (one seed) vs {one}, 1 epoch, random data. Cost "
        "model: the epoch's product flops (2 products per step + the epoch-end accuracy) at "
        "the products' measured rate, and the rest (per-call and per-step overhead, the "
        "per-configuration loss and update):",
        "",
        f"| N x D x C | {one} config (s) | {many} configs (s) | ratio (min / median) | "
        f"GFLOP/epoch {one} / {many} | product GFLOP/s {one} / {many} | "
        f"products' share {one} / {many} | rest (s) {one} / {many} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in scaling:
        a, b = r["cost_model"][str(one)], r["cost_model"][str(many)]
        lines.append(
            f"| {r['shape']} | {r['seconds'][str(one)]:.3f} | {r['seconds'][str(many)]:.3f} | "
            f"{r['ratio']:.1f}x / {r['ratio_median']:.1f}x | "
            f"{a['flops_per_epoch'] / 1e9:.2f} / {b['flops_per_epoch'] / 1e9:.1f} | "
            f"{a['product_gflops_per_s']:.0f} / {b['product_gflops_per_s']:.0f} | "
            f"{a['product_share']:.0%} / {b['product_share']:.0%} | "
            f"{a['other_seconds']:.3f} / {b['other_seconds']:.3f} |"
        )
    write(config.out, results, "\n".join(lines))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=Config.out)
    parser.add_argument("--repeats", type=int, default=Config.repeats)
    parser.add_argument("--epochs", type=int, default=Config.epochs)
    parser.add_argument("--grid-repeats", type=int, default=Config.grid_repeats)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    main(
        Config(
            out=args.out,
            repeats=args.repeats,
            epochs=args.epochs,
            grid_repeats=args.grid_repeats,
            torch=not args.no_torch,
        )
    )

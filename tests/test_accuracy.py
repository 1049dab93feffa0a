"""End-to-end test accuracy of `fit` on the built-in data sets."""

import jax
import numpy as np
import pytest

from svmjax import data, linear, optim, train


def test_mnist1d_linear_weston_watkins_reaches_the_papers_linear_baseline():
    # The mnist1d paper reports ~32% test accuracy for linear models.
    ds = data.load("mnist1d")
    accuracies = []
    for seed in range(3):
        params = linear.init(jax.random.key(seed), ds.n_features, ds.n_classes)
        params, _ = train.fit(
            params,
            ds.X_train,
            ds.y_train,
            key=jax.random.key(seed + 10),
            optimizer=optim.make_optimizer("momentum", 0.003),
            reg=1e-4,
            epochs=100,
            batch_size=256,
        )
        accuracies.append(np.mean(np.asarray(linear.predict(params, ds.X_test)) == ds.y_test))
    assert min(accuracies) >= 0.30, accuracies


@pytest.mark.parametrize("loss", ["weston_watkins", "crammer_singer", "one_vs_rest"])
def test_digits_every_loss_reaches_95_percent(loss):
    ds = data.load("digits")
    params = linear.init(jax.random.key(0), ds.n_features, ds.n_classes)
    params, _ = train.fit(
        params, ds.X_train, ds.y_train, key=jax.random.key(1), loss=loss, epochs=20, batch_size=64
    )
    accuracy = np.mean(np.asarray(linear.predict(params, ds.X_test)) == ds.y_test)
    assert accuracy >= 0.95, (loss, accuracy)

"""Model files (svmjax.model): the round trip, the format's version rules, the errors, and
the estimator's and checkpoint's use of them."""

import json
import sys
import zipfile

import jax
import numpy as np
import pytest
import scipy.sparse

import svmjax
from svmjax import SVMClassifier, checkpoint, linear, model, preprocessing, train

RNG = np.random.default_rng(0)
W, B = RNG.standard_normal((4, 3)), RNG.standard_normal(3)


def write_by_hand(path, header, **arrays):
    """An ``.npz`` the way the documented format describes it, without svmjax.model.save."""
    np.savez(path, header=np.array(json.dumps(header)), **arrays)
    return path


def v1_header(**changes):
    header = {"format": "svmjax-model", "version": 1, "n_features": 4, "n_classes": 3}
    return header | {"classes": ["a", "b", "c"]} | changes


@pytest.mark.parametrize(
    "classes",
    [
        ["cat", "dog", "émeu"],
        [-1, 1, 7],
        [0.5, 1.0, 2.5],
        np.array([3, 1, 2], np.uint8),
        np.array([1, "b", 2.5], dtype=object),
    ],  # fmt: skip
    ids=["str", "int", "float", "uint8", "mixed"],
)
def test_round_trip_keeps_every_field(tmp_path, classes):
    history = {"epoch": np.arange(1, 4), "objective": np.array([3.0, 2.0, 1.5])}
    saved = model.Model(
        W, B, classes=classes, offset=np.arange(4.0), scale=np.full(4, 2.0),
        preprocess="standardize", loss="top_k_hinge", squared=True, margin=0.5,
        loss_options={"k": 2}, training={"solver": "sgd", "epochs": np.int64(3)},
        history=history,
    )  # fmt: skip
    loaded = model.load(model.save(tmp_path / "sub" / "m.npz", saved))
    np.testing.assert_array_equal(loaded.W, W)
    np.testing.assert_array_equal(loaded.b, B)
    assert loaded.classes.dtype == np.asarray(classes).dtype
    assert loaded.classes.tolist() == np.asarray(classes).tolist()
    np.testing.assert_array_equal(loaded.offset, np.arange(4.0))
    np.testing.assert_array_equal(loaded.history["objective"], history["objective"])
    assert (loaded.preprocess, loaded.loss, loaded.squared, loaded.margin) == (
        "standardize", "top_k_hinge", True, 0.5)  # fmt: skip
    assert loaded.loss_options == {"k": 2} and loaded.training == {"solver": "sgd", "epochs": 3}
    assert loaded.svmjax_version == svmjax.__version__
    X = RNG.standard_normal((5, 4))
    assert loaded.predict(X).tolist() == saved.predict(X).tolist()


def test_parameters_alone_save_with_classes_0_to_c(tmp_path):
    params = linear.init(jax.random.key(0), 4, 3)
    loaded = model.load(model.save(tmp_path / "p.npz", params))
    assert loaded.classes.tolist() == [0, 1, 2] and loaded.preprocess is None
    X = RNG.standard_normal((6, 4)).astype(np.float32)
    assert loaded.predict(X).tolist() == np.asarray(linear.predict(params, X)).tolist()


@pytest.mark.parametrize("method", preprocessing.METHODS)
def test_scores_apply_the_preprocessing_to_dense_and_sparse_rows(method):
    X = RNG.standard_normal((30, 4)) * np.array([1.0, 5.0, 0.1, 2.0])
    X[RNG.random(X.shape) < 0.4] = 0
    scaling = preprocessing.fit_scaling(X, method)
    m = model.Model(W, B, offset=scaling.offset, scale=scaling.scale, preprocess=method)
    want = np.asarray(preprocessing.apply_scaling(scaling, X), np.float64) @ W + B
    np.testing.assert_allclose(m.scores(X), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m.scores(scipy.sparse.csr_matrix(X)), want, rtol=1e-5, atol=1e-5)


def test_a_v1_file_written_by_hand_loads(tmp_path):
    # The fields a version-1 file needs; everything else has a default.
    path = write_by_hand(tmp_path / "v1.npz", v1_header(), W=W, b=B)
    loaded = model.load(path)
    assert loaded.classes.tolist() == ["a", "b", "c"] and loaded.loss == "weston_watkins"
    assert loaded.offset is None and loaded.history == {} and loaded.svmjax_version == "unknown"
    np.testing.assert_array_equal(loaded.scores(np.eye(4)), W + B)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p: write_by_hand(p, v1_header(version=2, svmjax_version="9.0"), W=W, b=B),
            "model format version 2 (written by svmjax 9.0) is newer than this svmjax reads (1)",
        ),
        (lambda p: np.savez(p, W=W, b=B), "not an svmjax model file (no header)"),
        (lambda p: write_by_hand(p, {"format": "other"}, W=W), "(format 'other', not "),
        (lambda p: np.savez(p, header=np.array("{not json")), "not an svmjax model file"),
        (lambda p: write_by_hand(p, v1_header(version="1"), W=W, b=B), "format version '1'"),
        (lambda p: write_by_hand(p, v1_header(), W=W), "corrupt model file (no 'b')"),
        (lambda p: write_by_hand(p, v1_header(n_features=5), W=W, b=B), "corrupt model file"),
        (lambda p: write_by_hand(p, v1_header(classes=["a", "a", "b"]), W=W, b=B), "distinct"),
        (lambda p: write_by_hand(p, v1_header(classes_dtype="V8"), W=W, b=B), "classes_dtype"),
        (lambda p: np.save(p, W), "an .npy array, not an .npz archive"),
        (lambda p: p.write_text("1 1:0.5\n"), "cannot be read as a model file"),
    ],  # fmt: skip
    ids=[
        "future",
        "foreign",
        "other-format",
        "bad-json",
        "str-version",
        "no-b",
        "shape",
        "classes",
        "dtype",
        "npy",
        "text",
    ],  # fmt: skip
)
def test_files_that_are_not_models_give_one_line(tmp_path, make, message):
    path = tmp_path / "m.npz"
    make(path)
    path = next(tmp_path.iterdir())  # np.save may add a suffix
    with pytest.raises(ValueError) as error:
        model.load(path)
    assert message in str(error.value) and str(path) in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_a_truncated_file_is_an_error(tmp_path, keep):
    path = model.save(tmp_path / "m.npz", model.Model(W, B, history={"a": np.arange(500.0)}))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match="cannot be read as a model file|corrupt"):
        model.load(path)


def test_a_corrupt_member_is_an_error(tmp_path):
    path = model.save(tmp_path / "m.npz", model.Model(W, B))
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["W.npy"] = members["W.npy"][:40]
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    with pytest.raises(ValueError, match="cannot be read as a model file"):
        model.load(path)


def test_loading_imports_nothing_and_needs_no_registered_loss(tmp_path):
    path = model.save(tmp_path / "m.npz", model.Model(W, B, loss="a_loss_nobody_registered"))
    model.load(path)  # warm: NumPy's own lazy imports
    before = set(sys.modules)
    loaded = model.load(path)
    assert set(sys.modules) == before
    assert loaded.loss == "a_loss_nobody_registered" and loaded.predict(np.eye(4)).shape == (4,)


def test_labels_json_cannot_hold_are_refused_when_saving(tmp_path):
    with pytest.raises(TypeError, match="cannot be saved"):
        model.save(tmp_path / "m.npz", model.Model(W, B, classes=np.array([b"a", b"b", b"c"])))
    with pytest.raises(TypeError, match="cannot be saved as JSON"):
        model.save(tmp_path / "m.npz", model.Model(W, B, training={"key": object()}))
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_inconsistent_models_are_refused():
    with pytest.raises(ValueError, match="b must be"):
        model.Model(W, B[:2])
    with pytest.raises(ValueError, match="scale must be > 0"):
        model.Model(W, B, scale=np.zeros(4))
    with pytest.raises(ValueError, match="X must have shape"):
        model.Model(W, B).scores(np.ones((2, 5)))


@pytest.mark.parametrize("solver", ["exact", "sgd"])
def test_the_estimator_saves_and_loads(tmp_path, solver):
    X = RNG.standard_normal((60, 4)).astype(np.float32)
    y = np.array(["ant", "bee", "cow"])[np.argmax(X[:, :3] + 0.3 * RNG.standard_normal((60, 3)), 1)]
    weights = {"bee": 2.0}
    max_iter = 5 if solver == "sgd" else None  # epochs
    clf = SVMClassifier(
        C=3.0, solver=solver, class_weight=weights, max_iter=max_iter, random_state=1
    )
    clf.fit(X, y)
    clf.save(tmp_path / "clf.npz")
    back = SVMClassifier.load(tmp_path / "clf.npz")
    assert back.get_params() == clf.get_params()
    assert back.predict(X).tolist() == clf.predict(X).tolist()
    np.testing.assert_array_equal(back.decision_function(X), clf.decision_function(X))
    assert (back.n_iter_, back.objective_) == (clf.n_iter_, clf.objective_)
    assert back.n_features_in_ == 4
    assert model.load(tmp_path / "clf.npz").predict(X).tolist() == clf.predict(X).tolist()


def test_fit_results_load_as_an_estimator(tmp_path):
    X = RNG.standard_normal((40, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int32)
    params, history = train.fit(
        linear.init(jax.random.key(0), 3, 2), X, y, key=jax.random.key(1), epochs=2
    )
    model.save(tmp_path / "fit.npz", model.Model(params["W"], params["b"], history=history))
    clf = SVMClassifier.load(tmp_path / "fit.npz")
    assert clf.predict(X).tolist() == np.asarray(linear.predict(params, X)).tolist()
    assert model.load(tmp_path / "fit.npz").history["epoch"].tolist() == [1, 2]


def test_the_estimator_refuses_a_model_with_preprocessing(tmp_path):
    path = model.save(tmp_path / "m.npz", model.Model(W, B, scale=np.ones(4), preprocess="maxabs"))
    with pytest.raises(ValueError, match="preprocesses its features"):
        SVMClassifier.load(path)


def test_checkpoint_save_of_parameters_names_the_model_file(tmp_path):
    params = linear.init(jax.random.key(0), 3, 2)
    with pytest.raises(TypeError, match=r"takes a TrainState .* use svmjax.model.save"):
        checkpoint.save(tmp_path / "p.npz", params)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="checkpoint.load takes a TrainState"):
        checkpoint.load(tmp_path / "p.npz", params)  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())

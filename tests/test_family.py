"""The multiclass SVM family: the unified template, its named members, top-k losses and
the top-k accuracy, against readable naive loops, finite differences, autodiff, and the
subgradient inequality at ties."""

import inspect
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import compiled, random_problem, tied_problem
from hypothesis import given, settings
from hypothesis import strategies as st

from svmjax import analytic, gradcheck, losses, metrics, registry

MODULES = {"losses": losses, "analytic": analytic}
TRANSFORMS = {"eager": lambda f: f, "jit": jax.jit}

# Named tolerances (max-norm relative error, svmjax.gradcheck.rel_error).
VALUE_TOL32 = 2e-6  # float32 loss vs the float64 naive loop
GRAD_TOL32 = 2e-6  # float32 analytic vs autodiff gradient
FD_TOL64 = 1e-8  # float64 analytic gradient vs centred differences away from kinks
SUBGRAD_SLACK64 = 1e-9  # float64 rounding slack in f(z) >= f(s) + <g, z - s>

# Every new member, with non-default options where it has any.
CASES = {
    "lee_lin_wahba": {},
    "absolute_max_hinge": {},
    "absolute_wrong_max_hinge": {},
    "true_class_hinge": {},
    "reinforced_hinge": {"gamma": 0.3},
    "top_k_hinge-alpha": {"k": 2, "variant": "alpha"},
    "top_k_hinge-beta": {"k": 3, "variant": "beta"},
    "smooth_top_k": {"k": 2, "tau": 0.5},
    "unified_hinge": dict(
        margins="absolute",
        classes="all",
        aggregate="max",
        true_margin=2.0,
        wrong_weight=0.5,
        true_weight=2.0,
    ),  # fmt: skip
    "unified_hinge-relative-all": dict(margins="relative", classes="all", aggregate="sum"),
}
KINKED = [case for case in CASES if not case.startswith("smooth")]


def function(module, case):
    return getattr(module, case.split("-")[0])


# --------------------------------------------------------------------- the naive references


def naive_term_loss(s, y, margins, classes, aggregate, margin, true_margin, ww, tw, h):
    """One example of the unified template, term by term."""
    if true_margin is None:
        true_margin = margin if margins == "absolute" else 0.0
    terms = []
    for c in range(len(s)):
        if c == y and classes == "wrong" or c != y and classes == "true":
            continue
        if margins == "relative":
            v = true_margin if c == y else margin - (s[y] - s[c])
        else:
            v = true_margin - s[c] if c == y else margin + s[c]
        terms.append((tw if c == y else ww) * h(v))
    return sum(terms) if aggregate == "sum" else max(terms)


def naive_smooth_top_k(s, y, k, tau, margin):
    """Berrada et al.'s definition, enumerating every k-subset (itertools.combinations)."""
    C = len(s)
    everything, with_y = [], []
    for S in itertools.combinations(range(C), k):
        mean = sum(s[j] for j in S) / k
        everything.append((margin * (y not in S) + mean) / tau)
        if y in S:
            with_y.append(mean / tau)
    return tau * (np.logaddexp.reduce(everything) - np.logaddexp.reduce(with_y))


def naive_loss(case, scores, labels, margin=1.0, squared=False, class_weights=None, **opts):
    """Every member as plain Python loops over examples and classes, in float64."""
    name = case.split("-")[0]

    def h(v):
        return max(0.0, v) ** 2 if squared else max(0.0, v)

    out = []
    for s, y in zip(
        np.asarray(scores, np.float64).tolist(), np.asarray(labels).tolist(), strict=True
    ):
        C = len(s)
        if name == "unified_hinge":
            loss = naive_term_loss(
                s, y, opts["margins"], opts["classes"], opts["aggregate"],
                margin, opts.get("true_margin"), opts.get("wrong_weight", 1.0),
                opts.get("true_weight", 1.0), h,
            )  # fmt: skip
        elif name == "lee_lin_wahba":
            loss = sum(h(s[c] + margin) for c in range(C) if c != y)
        elif name == "absolute_max_hinge":
            loss = max(h(margin - (1 if c == y else -1) * s[c]) for c in range(C))
        elif name == "absolute_wrong_max_hinge":
            loss = max(h(margin + s[c]) for c in range(C) if c != y)
        elif name == "true_class_hinge":
            loss = h(margin - s[y])
        elif name == "reinforced_hinge":
            g = opts["gamma"]
            loss = g * h((C - 1) * margin - s[y])
            loss += (1 - g) * sum(h(margin + s[c]) for c in range(C) if c != y)
        elif name == "top_k_hinge":
            k = opts["k"]
            v = sorted(((s[c] - s[y] + margin) if c != y else 0.0 for c in range(C)), reverse=True)
            if opts["variant"] == "alpha":
                loss = h(sum(v[:k]) / k)
            else:
                loss = sum(h(x) for x in v[:k]) / k
        elif name == "smooth_top_k":
            loss = naive_smooth_top_k(s, y, opts["k"], opts["tau"], margin)
            loss = loss**2 if squared else loss
        else:
            raise AssertionError(name)
        out.append(loss * (1.0 if class_weights is None else float(class_weights[y])))
    return np.array(out)


def grad_of_sum(fn, **options):
    return jax.jit(jax.grad(lambda s, y: jnp.sum(fn(s, y, **options))))


# ------------------------------------------------------------------------------- values


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(
    "transform, flavour", [("eager", "plain"), ("jit", "squared-weighted-margin")]
)
def test_values_match_naive_loop(module, transform, case, flavour):
    scores, labels = random_problem(0, 48, 6, np.float32, scale=1.5)
    options = dict(CASES[case])
    if flavour != "plain":
        options.update(squared=True, margin=0.5)
        options["class_weights"] = np.linspace(0.5, 2.0, 6).astype(np.float32)
    fn = function(MODULES[module], case)
    got = TRANSFORMS[transform](lambda s, y: fn(s, y, **options))(scores, labels)
    assert got.shape == (48,) and got.dtype == np.float32
    want = naive_loss(case, scores, labels, **options)
    assert 0.05 < np.mean(want > 1e-6) <= 1.0  # the data reaches the hinges
    assert gradcheck.rel_error(got, want) < VALUE_TOL32


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("case", CASES)
def test_vmap_of_single_examples_equals_batched_call(module, case):
    scores, labels = random_problem(1, 6, 5, np.float32)
    fn = function(MODULES[module], case)
    mapped = jax.jit(jax.vmap(lambda s, y: fn(s, y, **CASES[case])))(scores, labels)
    loop = np.array([fn(s, y, **CASES[case]) for s, y in zip(scores, labels, strict=True)])
    assert gradcheck.rel_error(mapped, loop) < VALUE_TOL32
    nested = fn(scores.reshape(2, 3, 5), labels.reshape(2, 3), **CASES[case])
    assert nested.shape == (2, 3)


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("case", KINKED)
def test_zero_once_margins_are_met(module, case):
    # The true class far ahead and every wrong score below -margin (the sum-to-zero machines
    # also want the true score above its target; reinforced's is (C - 1) * margin = 2).
    scores = jnp.array([[3.0, -2.0, -2.5], [-2.0, -2.5, 3.5]])
    labels = jnp.array([0, 2])
    fn = function(MODULES[module], case)
    options = dict(CASES[case])
    options.pop("true_margin", None)
    np.testing.assert_array_equal(fn(scores, labels, **options), [0.0, 0.0])
    assert float(fn(scores, labels, **options, margin=10.0)[0]) > 0


# ----------------------------------------------------------- the template and its instances

INSTANCES = {
    "weston_watkins": dict(margins="relative", classes="wrong", aggregate="sum"),
    "crammer_singer": dict(margins="relative", classes="wrong", aggregate="max"),
    "one_vs_rest": dict(margins="absolute", classes="all", aggregate="sum"),
}


# Fixed shape (one compile for all examples), float32.
TIED = tied_problem(n=3, c=5, dtype=np.float32)


@settings(max_examples=40, deadline=None)
@given(problem=TIED, name=st.sampled_from(list(INSTANCES)), squared=st.booleans())
def test_existing_losses_are_instances_of_the_template(problem, name, squared):
    # Same values always. Same analytic gradients *everywhere*, ties and kinks included:
    # the hand-tuned rules of analytic.<name> agree with the template's one rule. (Autodiff
    # of the pure versions may differ at ties: jnp.max over the masked terms splits there.)
    scores, labels, margin, _ = problem
    template_options = tuple(INSTANCES[name].items())
    for module in (analytic, losses):
        own, own_grad, _ = compiled(getattr(module, name), squared, ())
        template, template_grad, _ = compiled(module.unified_hinge, squared, template_options)
        np.testing.assert_array_equal(own(scores, labels, margin), template(scores, labels, margin))
        if module is analytic:
            np.testing.assert_array_equal(
                own_grad(scores, labels, margin), template_grad(scores, labels, margin)
            )


@pytest.mark.parametrize("name", INSTANCES)
def test_instances_on_random_scores(name):
    scores, labels = random_problem(2, 64, 7, np.float32)
    for module in (analytic, losses):
        g_own = grad_of_sum(getattr(module, name), margin=0.7)(scores, labels)
        g_template = grad_of_sum(module.unified_hinge, margin=0.7, **INSTANCES[name])(
            scores, labels
        )
        assert gradcheck.rel_error(g_own, g_template) < GRAD_TOL32


def test_top_k_hinge_with_k_1_is_crammer_singer():
    scores, labels = random_problem(3, 64, 6, np.float32)
    for module in (analytic, losses):
        want = module.crammer_singer(scores, labels, margin=0.8)
        for variant in ("alpha", "beta"):
            got = module.top_k_hinge(scores, labels, k=1, variant=variant, margin=0.8)
            np.testing.assert_array_equal(got, want)
            g = grad_of_sum(module.top_k_hinge, k=1, variant=variant)(scores, labels)
            g_cs = grad_of_sum(module.crammer_singer)(scores, labels)
            assert gradcheck.rel_error(g, g_cs) < GRAD_TOL32


def test_kink_conventions_are_pinned():
    # ATM with two absolute terms tied at the top: the lowest index takes the gradient.
    scores, labels = jnp.array([[0.0, 0.5, 0.5]]), jnp.array([0])  # terms 1, 1.5, 1.5
    np.testing.assert_array_equal(
        grad_of_sum(analytic.absolute_wrong_max_hinge)(scores, labels), [[0.0, 1.0, 0.0]]
    )
    np.testing.assert_array_equal(
        grad_of_sum(losses.absolute_wrong_max_hinge)(scores, labels), [[0.0, 0.5, 0.5]]
    )
    # Lee-Lin-Wahba exactly at its kink (s_c + 1 = 0): strict > 0 gives 0, autodiff 1/2.
    scores = jnp.array([[2.0, -1.0, -1.0]])
    np.testing.assert_array_equal(grad_of_sum(analytic.lee_lin_wahba)(scores, labels), [[0, 0, 0]])
    np.testing.assert_array_equal(
        grad_of_sum(losses.lee_lin_wahba)(scores, labels), [[0.0, 0.5, 0.5]]
    )


# ---------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("squared", [False, True], ids=["plain", "squared"])
def test_analytic_matches_finite_differences_in_float64(case, squared):
    name = case.split("-")[0]
    options = dict(CASES[case], squared=squared)
    with gradcheck.x64():
        scores, labels = random_problem(4, 12, 5, np.float64, scale=1.5)
        scores, labels = jnp.asarray(scores), jnp.asarray(labels)
        eps = 1e-4
        kinks = registry.get(name).kinks
        if kinks is not None:  # every centred difference stays on one smooth piece
            kink_options = {k: v for k, v in options.items() if k != "squared"}
            assert float(jnp.min(kinks(scores, labels, 1.0, **kink_options))) > 2 * eps
        weights = jnp.linspace(0.5, 2.0, 5)

        def total(s):
            return jnp.sum(function(analytic, case)(s, labels, class_weights=weights, **options))

        exact = jax.jit(jax.grad(total))(scores)
        numeric = gradcheck.numerical_gradient(total, scores, eps=eps)
        assert exact.dtype == jnp.float64 and float(jnp.max(jnp.abs(exact))) > 0
        assert gradcheck.rel_error(exact, numeric) < FD_TOL64


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("squared", [False, True], ids=["plain", "squared"])
def test_analytic_matches_autodiff_away_from_kinks(case, squared):
    scores, labels = random_problem(5, 64, 8, np.float32, scale=2.0)
    options = dict(CASES[case], squared=squared, margin=0.75)
    options["class_weights"] = np.linspace(0.5, 2.0, 8).astype(np.float32)
    got = grad_of_sum(function(analytic, case), **options)(scores, labels)
    want = grad_of_sum(function(losses, case), **options)(scores, labels)
    assert float(jnp.max(jnp.abs(want))) > 0
    assert gradcheck.rel_error(got, want) < GRAD_TOL32


@pytest.mark.parametrize("case", CASES)
def test_margin_gradient_matches_autodiff(case):
    scores, labels = random_problem(6, 32, 5, np.float32)

    def total(module, margin):
        return jnp.sum(function(module, case)(scores, labels, margin=margin, **CASES[case]))

    got = jax.grad(total, 1)(analytic, 0.75)
    want = jax.grad(total, 1)(losses, 0.75)
    assert gradcheck.rel_error(got, want) < GRAD_TOL32


@settings(max_examples=40, deadline=None)
@given(problem=TIED, case=st.sampled_from(KINKED), squared=st.booleans())
def test_both_gradients_are_subgradients_at_ties(problem, case, squared):
    # Every kinked member is convex in the scores, so g is a subgradient at s iff
    # f(z) >= f(s) + <g, z - s> for all z; check random z near s and far from it.
    scores, labels, margin, seed = problem
    with gradcheck.x64():
        s = jnp.asarray(scores, jnp.float64)
        steps = np.array([1e-3, 1e-1, 3.0]).repeat(40)[:, None, None]
        z = s[None] + np.random.default_rng(seed).standard_normal((120, *s.shape)) * steps
        for module in (analytic, losses):
            f, grad, f_many = compiled(function(module, case), squared, tuple(CASES[case].items()))
            g = grad(s, labels, margin)
            lower = f(s, labels, margin) + jnp.sum(g[None] * (z - s[None]), axis=(1, 2))
            assert bool(jnp.all(f_many(z, labels, margin) >= lower - SUBGRAD_SLACK64)), module


def test_top_k_gradient_at_a_tie_uses_the_lowest_indices():
    # v = [0, 1, 1, 1] (true class 0): the top-2 set is {1, 2}, not {2, 3}.
    scores, labels = jnp.array([[0.0, 0.0, 0.0, 0.0]]), jnp.array([0])
    got = grad_of_sum(analytic.top_k_hinge, k=2)(scores, labels)
    np.testing.assert_array_equal(got, [[-1.0, 0.5, 0.5, 0.0]])


# --------------------------------------------------------------------------- smooth top-k


@pytest.mark.parametrize("k", [1, 2, 3])
def test_smooth_top_k_matches_subset_enumeration_in_float64(k):
    with gradcheck.x64():
        scores, labels = random_problem(7, 20, 5, np.float64, scale=2.0)
        for tau in (0.1, 1.0, 3.0):
            want = naive_loss("smooth_top_k", scores, labels, k=k, tau=tau, margin=0.7)
            for module in (losses, analytic):
                got = module.smooth_top_k(scores, labels, k=k, tau=tau, margin=0.7)
                assert gradcheck.rel_error(got, want) < 1e-12


def hard_smooth_top_k(scores, labels, k, margin=1.0):
    """The tau -> 0 limit, max(0, margin + (k-th largest wrong score - s_y) / k), in float64:
    max over S without y of (margin + mean_S s) minus max over S with y of mean_S s."""
    out = []
    for s, y in zip(np.asarray(scores, np.float64), np.asarray(labels), strict=True):
        wrong = np.sort(np.delete(s, y))[::-1]
        out.append(max(0.0, margin + (wrong[k - 1] - s[y]) / k))
    return np.array(out)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_smooth_top_k_tends_to_the_hard_loss_as_tau_goes_to_zero(k):
    with gradcheck.x64():
        scores, labels = random_problem(8, 20, 6, np.float64, scale=2.0)
        hard = []  # by enumeration, and by the closed form
        for s, y in zip(scores, labels, strict=True):
            subsets = list(itertools.combinations(range(6), k))
            out = max(1.0 + s[list(S)].mean() for S in subsets if y not in S)
            inside = max(s[list(S)].mean() for S in subsets if y in S)
            hard.append(max(0.0, out - inside))
        np.testing.assert_allclose(hard, hard_smooth_top_k(scores, labels, k), atol=1e-12)
        for tau in (1e-2, 1e-3):
            got = np.asarray(analytic.smooth_top_k(scores, labels, k=k, tau=tau))
            # Each log-sum-exp exceeds its max by at most tau * log(number of subsets).
            assert np.all(got - hard >= -tau * math.log(math.comb(5, k - 1)) - 1e-12)
            assert np.all(got - hard <= tau * math.log(math.comb(6, k)) + 1e-12)


@pytest.mark.parametrize("scale", [1e4, 1e30])
@pytest.mark.parametrize("module", MODULES)
def test_smooth_top_k_is_finite_for_huge_scores(scale, module):
    scores, labels = random_problem(9, 16, 5, np.float32, scale=1.0)
    scores = scores * np.float32(scale)
    fn = MODULES[module].smooth_top_k
    loss = jax.jit(lambda s, y: fn(s, y, k=2, tau=1.0))(scores, labels)
    g = grad_of_sum(fn, k=2, tau=1.0)(scores, labels)
    assert np.isfinite(loss).all() and np.isfinite(g).all()
    # At this scale tau is negligible: the loss is its tau -> 0 limit.
    assert gradcheck.rel_error(loss, hard_smooth_top_k(scores, labels, 2)) < 1e-5


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("case", CASES)
def test_bad_labels_and_shapes(module, case):
    scores, _ = random_problem(10, 4, 4, np.float32)
    fn = function(MODULES[module], case)
    options = CASES[case]
    with pytest.raises(ValueError, match="outside"):
        fn(scores, np.array([0, 4, 1, 2]), **options)
    with pytest.raises(ValueError, match="shape"):
        fn(scores, np.array([0, 1, 2]), **options)
    labels = jnp.array([0, 4, 1, -1])  # traced under jit: NaN, never a plausible number
    loss = np.asarray(jax.jit(lambda s, y: fn(s, y, **options))(scores, labels))
    g = np.asarray(grad_of_sum(fn, **options)(scores, labels))
    assert np.isnan(loss[[1, 3]]).all() and np.isfinite(loss[[0, 2]]).all()
    assert np.isnan(g[[1, 3]]).all() and np.isfinite(g[[0, 2]]).all()


@pytest.mark.parametrize("module", MODULES)
def test_bad_options_raise(module):
    mod = MODULES[module]
    scores, labels = random_problem(11, 4, 4, np.float32)
    bad = [
        (mod.top_k_hinge, dict(k=0)),
        (mod.top_k_hinge, dict(k=5)),
        (mod.top_k_hinge, dict(variant="gamma")),
        (mod.smooth_top_k, dict(k=4)),
        (mod.smooth_top_k, dict(tau=0.0)),
        (mod.reinforced_hinge, dict(gamma=1.5)),
        (mod.unified_hinge, dict(margins="signed")),
        (mod.unified_hinge, dict(classes="true")),  # relative margins have no true term
        (mod.unified_hinge, dict(aggregate="mean")),
        (mod.unified_hinge, dict(wrong_weight=-1.0)),
        (mod.unified_hinge, dict(true_margin=jnp.ones(2), margins="absolute")),
    ]
    for fn, options in bad:
        with pytest.raises(ValueError):
            fn(scores, labels, **options)


# --------------------------------------------------------------------- registry and metric


def test_registry_entries():
    sum_to_zero = [
        "lee_lin_wahba",
        "absolute_sum_hinge",
        "absolute_max_hinge",
        "absolute_wrong_max_hinge",
        "true_class_hinge",
        "reinforced_hinge",
    ]
    for name in sum_to_zero:
        entry = registry.get(name)
        assert entry.constraint == "sum_to_zero" and entry.dual is not None
    assert registry.get("absolute_sum_hinge").analytic is analytic.one_vs_rest  # ATS
    assert registry.get("top_k_hinge").options == ("k", "variant")
    assert registry.get("smooth_top_k").options == ("k", "tau")
    assert registry.get("reinforced_hinge").options == ("gamma",)
    assert set(registry.names(solver=True)) == set(registry.names())  # every built-in


# The template's named members (its table: svmjax._members.MACHINES).
MEMBERS = [
    "lee_lin_wahba",
    "absolute_max_hinge",
    "absolute_wrong_max_hinge",
    "true_class_hinge",
    "reinforced_hinge",
]


@pytest.mark.parametrize("module", MODULES.values(), ids=MODULES.keys())
@pytest.mark.parametrize("name", MEMBERS)
def test_named_members_are_documented_functions_of_their_module(module, name):
    # Built once from the template's table, they read as functions written in the module.
    fn = getattr(module, name)
    assert name in module.__all__ and inspect.isfunction(fn)
    assert (fn.__module__, fn.__name__, fn.__qualname__) == (module.__name__, name, name)
    parameters = list(inspect.signature(fn).parameters.values())
    assert [p.name for p in parameters[:2]] == ["scores", "labels"]
    keywords = {p.name: p.default for p in parameters[2:]}
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters[2:])
    want = dict(margin=1.0, squared=False, class_weights=None)
    assert keywords == ({"gamma": 0.5} | want if name == "reinforced_hinge" else want)
    doc = fn.__doc__
    assert ".. math::" in doc and "Args:" in doc and "Example:" in doc and "Reference:" in doc
    assert ("analytic gradient" in doc) == (module is analytic)
    other = losses if module is analytic else analytic
    assert f":func:`{other.__name__}.{name}`" in doc  # the twin, and its kink choice


def naive_top_k_accuracy(scores, labels, k):
    hits = []
    for s, y in zip(np.asarray(scores).tolist(), np.asarray(labels).tolist(), strict=True):
        order = sorted(range(len(s)), key=lambda c: (-s[c], c))  # ties: lower index first
        hits.append(y in order[:k])
    return float(np.mean(hits))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_accuracy_against_a_loop_with_ties(k):
    rng = np.random.default_rng(12)
    scores = rng.integers(0, 3, size=(200, 5)).astype(np.float32)  # ties everywhere
    labels = rng.integers(0, 5, size=200).astype(np.int32)
    got = jax.jit(metrics.top_k_accuracy, static_argnums=2)(scores, labels, k)
    assert float(got) == pytest.approx(naive_top_k_accuracy(scores, labels, k), abs=1e-6)
    if k == 1:
        assert float(got) == pytest.approx(np.mean(np.argmax(scores, 1) == labels), abs=1e-6)
    assert float(metrics.top_k_accuracy(scores, labels, 5)) == 1.0


def test_top_k_accuracy_bad_input():
    scores, _ = random_problem(13, 3, 4, np.float32)
    with pytest.raises(ValueError, match="outside"):
        metrics.top_k_accuracy(scores, np.array([0, 4, 1]), 1)
    with pytest.raises(ValueError, match="k must"):
        metrics.top_k_accuracy(scores, np.array([0, 1, 1]), 0)
    assert np.isnan(jax.jit(metrics.top_k_accuracy)(scores, jnp.array([0, 4, 1])))

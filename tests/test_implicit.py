"""The two implicit-differentiation backends: JAXopt's and core JAX's (Optax + custom_root)."""

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill import convnet, data, distillation, implicit, model, network_distillation, outer
from distill.config import DistillConfig, NetworkConfig
from tests.conftest import requires_mnist


def _problem(dtype, k=10, p=30, n=200, seed=0):
    """A distilled set (k, p) with its labels, and a real training set (n, p)."""
    rng = np.random.default_rng(seed)
    images = jnp.asarray(rng.uniform(0, 1, (k, p)), dtype)
    labels = jnp.arange(k) % 10
    real = jnp.asarray(rng.uniform(0, 1, (n, p)), dtype)
    real_labels = jnp.asarray(rng.integers(0, 10, n))
    return images, labels, real, real_labels


def _hypergradients(backend, method, variables, labels, real, real_labels, learn_labels=False):
    config = DistillConfig(inner_tol=1e-11, inner_maxiter=5000, inner_solver=method,
                           learn_l2reg=True, learn_labels=learn_labels, implicit_diff=backend)
    precise = functools.partial(implicit.linear_solve("cg", backend), tol=1e-13, maxiter=2000)
    objective = distillation.make_outer_objective(config, labels, num_features=real.shape[1],
                                                  implicit_diff_solve=precise)
    (_, inner), gradient = jax.value_and_grad(objective, has_aux=True)(variables, real,
                                                                         real_labels)
    assert float(inner.state.error) <= config.inner_tol
    return gradient


@pytest.mark.parametrize("method", ["gradient_descent", "lbfgs"])
def test_the_core_jax_hypergradient_equals_jaxopts_in_float64(x64, method):
    """Every learned quantity: images, log(l2reg) and label logits."""
    images, labels, real, real_labels = _problem(jnp.float64)
    variables = {"images": images, "log_l2reg": jnp.log(jnp.asarray(0.05, jnp.float64)),
                 "label_logits": jnp.log(0.9 * jax.nn.one_hot(labels, 10, dtype=jnp.float64)
                                         + 0.01)}
    by_jaxopt = _hypergradients("jaxopt", method, variables, labels, real, real_labels, True)
    by_jax = _hypergradients("jax", method, variables, labels, real, real_labels, True)
    for name in variables:
        # Both inner solves stop at a stopping quantity below 1e-11 (for
        # JAXopt's gradient descent its own, not quite the gradient norm),
        # near the same solution: the hypergradients agree to about that.
        np.testing.assert_allclose(by_jax[name], by_jaxopt[name], rtol=1e-7,
                                   atol=1e-9 * float(jnp.max(jnp.abs(by_jaxopt[name]))))


def test_the_core_jax_hypergradient_matches_finite_differences_in_float64(x64):
    images, labels, real, real_labels = _problem(jnp.float64)
    config = DistillConfig(inner_tol=1e-11, inner_maxiter=5000, inner_solver="lbfgs",
                           implicit_diff="jax")
    objective = distillation.make_outer_objective(
        config, labels, num_features=30,
        implicit_diff_solve=functools.partial(implicit.solve_cg, tol=1e-13, maxiter=2000))

    def loss(value):
        return objective(value, real, real_labels)[0]

    gradient = jax.grad(loss)(images)
    direction = jax.random.normal(jax.random.PRNGKey(3), images.shape, jnp.float64)
    epsilon = 1e-4
    finite_difference = (loss(images + epsilon * direction)
                         - loss(images - epsilon * direction)) / (2 * epsilon)
    implicit_value = jnp.sum(gradient * direction)
    assert abs(float(implicit_value)) > 1e-6
    np.testing.assert_allclose(float(implicit_value), float(finite_difference), rtol=1e-5)


def test_the_network_features_model_gets_the_same_hypergradient_from_both_backends(x64):
    shape = (8, 8, 1)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    network = jax.tree.map(lambda value: jnp.asarray(value, jnp.float64),
                           convnet.init_convnet(keys[0], image_shape=shape, width=3, depth=2))
    hard = np.arange(10)
    real = jax.random.normal(keys[1], (40, 64), jnp.float64)
    real_labels = jnp.arange(40) % 10
    gradients = {}
    for backend in ("jaxopt", "jax"):
        config = NetworkConfig(images_per_class=1, width=3, depth=2, l2reg=0.05,
                               inner_tol=1e-11, inner_maxiter=2000, implicit_diff=backend)
        variables = network_distillation.initial_variables(
            config, jax.random.normal(keys[2], (10, 64), jnp.float64), labels=hard)
        variables = jax.tree.map(lambda value: jnp.asarray(value, jnp.float64), variables)
        loss = network_distillation.make_outer_loss(config, hard, image_shape=shape)
        (_, inner), gradients[backend] = jax.value_and_grad(loss, has_aux=True)(
            variables, network, real, real_labels)
        assert float(inner.state.error) <= config.inner_tol
    for name in gradients["jaxopt"]:
        np.testing.assert_allclose(gradients["jax"][name], gradients["jaxopt"][name], rtol=1e-6,
                                   atol=1e-9 * float(jnp.max(jnp.abs(gradients["jaxopt"][name]))))


@requires_mnist
def test_float32_solves_of_real_images_reach_a_tolerance_of_1e_6_cold_and_warm_started():
    """With Optax's float64 setting of its zoom line search, these solves stall
    just above a gradient norm of 1e-6 and run to maxiter."""
    mnist = data.load_dataset("mnist")
    first_of_each_class = [int(np.flatnonzero(mnist.train.labels == c)[0]) for c in range(10)]
    images = jnp.asarray(mnist.train.images[first_of_each_class])
    labels = jnp.arange(10)
    solver = model.make_inner_solver(tol=1e-6, maxiter=2000, method="lbfgs", backend="jax")
    run = jax.jit(lambda start, images: solver.run(start, 1.2e-5, (images, labels)))
    solution = run(jnp.ones((784, 10)), images)
    assert float(solution.state.error) <= 1e-6
    for seed in range(3):
        moved = images + 1e-3 * jax.random.normal(jax.random.PRNGKey(seed), images.shape)
        again = run(solution.params, moved)
        assert float(again.state.error) <= 1e-6 and int(again.state.iter_num) < 2000


def test_the_inner_objective_is_jaxopts_bit_for_bit():
    jaxopt = implicit.import_jaxopt()
    images, labels, _, _ = _problem(jnp.float32)
    W = jax.random.normal(jax.random.PRNGKey(0), (30, 10))
    data = (images, labels)
    assert model.inner_objective(W, 0.1, data) == jaxopt.objective.l2_multiclass_logreg(
        W, 0.1, data)
    np.testing.assert_array_equal(
        jax.grad(model.inner_objective)(W, 0.1, data),
        jax.grad(jaxopt.objective.l2_multiclass_logreg)(W, 0.1, data))


@pytest.mark.parametrize("backend", ["jaxopt", "jax"])
def test_cg_and_normal_cg_solve_the_same_symmetric_system(x64, backend):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 6))
    A = jnp.asarray(A @ A.T + 6 * np.eye(6))
    b = jnp.asarray(rng.standard_normal(6))
    for name in ("cg", "normal_cg"):
        x = implicit.linear_solve(name, backend)(lambda v: A @ v, b, tol=1e-12)
        np.testing.assert_allclose(A @ x, b, rtol=1e-8, atol=1e-10)


def test_the_core_jax_solver_reports_where_it_stopped():
    images, labels, _, _ = _problem(jnp.float32)
    solver = implicit.make_solver(model.inner_objective, tol=1e-12, maxiter=7,
                                  method="gradient_descent", backend="jax")
    result = solver.run(jnp.ones((30, 10)), 0.1, (images, labels))
    assert int(result.state.iter_num) == 7
    gradient = jax.grad(model.inner_objective)(result.params, 0.1, (images, labels))
    np.testing.assert_allclose(float(result.state.error), float(jnp.linalg.norm(gradient)),
                               rtol=1e-5)


@pytest.mark.parametrize("options, message", [
    ({"backend": "optimistix"}, "backend must be one of"),
    ({"backend": "jax", "implicit_diff": False}, "differentiates implicitly only"),
    ({"backend": "jax", "maxls": 10}, "takes no option"),
    ({"method": "newton"}, "method must be one of"),
])
def test_bad_solver_options_are_refused_naming_them(options, message):
    with pytest.raises(ValueError, match=message):
        implicit.make_solver(model.inner_objective, tol=1e-3, maxiter=10, **options)


def test_without_jaxopt_the_jaxopt_backend_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "jaxopt", None)  # import jaxopt now fails
    with pytest.raises(ImportError, match=r"--implicit-diff jax"):
        model.make_inner_solver(backend="jaxopt")
    with pytest.raises(ImportError, match=r"outer_optimizer 'lbfgs' or 'adam'"):
        outer.GradientDescent(lambda variables: (jnp.sum(variables**2), None))
    solver = model.make_inner_solver(tol=1e-4, maxiter=100, backend="jax")
    images, labels, _, _ = _problem(jnp.float32)
    assert float(solver.run(jnp.ones((30, 10)), 0.1, (images, labels)).state.error) <= 1e-4


@pytest.mark.parametrize("installed", [True, False])
def test_the_evaluation_fit_uses_optax_when_jaxopt_is_missing(monkeypatch, installed):
    """Nothing is differentiated there, so either L-BFGS serves; both reach tol."""
    if not installed:
        monkeypatch.setitem(sys.modules, "jaxopt", None)
        monkeypatch.setattr(implicit, "jaxopt_installed", lambda: False)
    images, labels, _, _ = _problem(jnp.float32, k=40)
    W, gradient_norm = model.fit_logistic_regression(images, labels, 0.1, tol=1e-5)
    assert gradient_norm <= 1e-5
    reference, _ = model.fit_logistic_regression(images, labels, 0.1, tol=1e-5, backend="jax")
    np.testing.assert_allclose(W, reference, atol=1e-3)

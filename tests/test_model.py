import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill import model


def _problem(k=12, p=30, seed=0):
    rng = np.random.default_rng(seed)
    images = jnp.asarray(rng.uniform(0, 1, (k, p)), jnp.float32)
    labels = jnp.asarray(np.arange(k) % 10)
    return images, labels


def test_inner_objective_matches_the_formula():
    images, labels = _problem()
    W = jax.random.normal(jax.random.PRNGKey(0), (30, 10)) * 0.1
    scores = images @ W
    by_hand = (jnp.mean(jax.nn.logsumexp(scores, axis=1) - scores[jnp.arange(12), labels])
               + 0.05 * jnp.sum(W**2))
    np.testing.assert_allclose(model.inner_objective(W, 0.1, (images, labels)), by_hand, rtol=1e-6)


def test_soft_labels_with_one_hot_targets_equal_hard_labels():
    images, labels = _problem()
    W = jax.random.normal(jax.random.PRNGKey(1), (30, 10))
    hard = model.logistic_objective(W, 0.3, (images, labels))
    soft = model.logistic_objective(W, 0.3, (images, jax.nn.one_hot(labels, 10)))
    np.testing.assert_allclose(hard, soft, rtol=1e-5)


@pytest.mark.parametrize("method", model.INNER_SOLVERS)
def test_inner_solver_reaches_tolerance_and_agrees_with_lbfgs(method):
    images, labels = _problem()
    solver = model.make_inner_solver(tol=1e-4, maxiter=2000, method=method)
    run = solver.run(model.init_inner_params(30, 10), 0.1, (images, labels))
    assert float(run.state.error) <= 1e-4
    W_exact, exact_gradient_norm = model.fit_logistic_regression(images, labels, 0.1, tol=1e-5)
    gradient_norm = jnp.linalg.norm(jax.grad(model.inner_objective)(run.params, 0.1, (images, labels)))
    # Strong convexity: ||W - W*|| <= ||grad L(W)|| / l2reg.
    assert float(jnp.linalg.norm(run.params - W_exact)) <= (gradient_norm + exact_gradient_norm) / 0.1


def test_inner_lbfgs_reaches_a_tight_tolerance_where_gradient_descent_cannot():
    """The regime a learned l2reg leads to: ill-conditioned, and float32."""
    images, labels = _problem()
    runs = {method: model.make_inner_solver(tol=1e-6, maxiter=2000, method=method).run(
                model.init_inner_params(30, 10), 1e-5, (images, labels))
            for method in model.INNER_SOLVERS}
    lbfgs, descent = runs["lbfgs"].state, runs["gradient_descent"].state
    assert float(lbfgs.error) <= 1e-6 and int(lbfgs.iter_num) < 200
    # Gradient descent, the original's inner solver, stops at maxiter far from tol.
    assert int(descent.iter_num) == 2000 and float(descent.error) > 10 * 1e-6


def test_unknown_inner_solver_is_refused():
    with pytest.raises(ValueError, match="method.*'newton'"):
        model.make_inner_solver(method="newton")


def test_fit_refuses_to_return_an_unconverged_model():
    images, labels = _problem()
    with pytest.raises(RuntimeError, match=r"converge in 2 iterations.*tol=1e-09"):
        model.fit_logistic_regression(images, labels, 0.01, tol=1e-9, maxiter=2)


def test_accuracy_counts_correct_predictions():
    W = jnp.eye(3)
    images = jnp.asarray([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 0, 0]])
    assert model.accuracy(W, images, jnp.asarray([0, 1, 2, 2])) == 0.75


def test_jaxopt_still_announces_it_is_archived():
    """The book says so; if a future JAXopt stops warning, the book must change."""
    import subprocess
    import sys

    completed = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", "import jaxopt"],
                               capture_output=True, text=True)
    assert completed.returncode != 0 and "JAXopt is no longer maintained" in completed.stderr


def test_scores_backward_pass_is_the_plain_one():
    images = jax.random.uniform(jax.random.PRNGKey(0), (300, 30))
    labels = jax.random.randint(jax.random.PRNGKey(1), (300,), 0, 10)
    W = jax.random.normal(jax.random.PRNGKey(2), (30, 10))

    def plain(W, images):
        return model.logistic_objective(W, 0.0, (images, labels))

    value, grads = jax.value_and_grad(model.data_loss, argnums=(0, 1))(W, images, labels)
    expected_value, expected = jax.value_and_grad(plain, argnums=(0, 1))(W, images)
    np.testing.assert_allclose(value, expected_value, rtol=1e-6)
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    soft = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(3), (300, 10)))
    np.testing.assert_allclose(model.data_loss(W, images, soft),
                               model.softlabel_objective(W, 0.0, (images, soft)), rtol=1e-6)


def test_hessian_vector_products_equal_the_hessian_times_the_vector():
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(12, 5)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 3, 12))
    W = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    direction = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    hessian = jax.hessian(model.inner_objective)(W, 0.3, (images, labels)).reshape(15, 15)
    product = model.hessian_vector_product(W, 0.3, (images, labels))(direction)
    np.testing.assert_allclose(product.ravel(), hessian @ direction.ravel(), rtol=1e-4, atol=1e-6)
    # Positive definite with l2reg > 0: <v, H v> >= l2reg ||v||^2.
    assert float(jnp.vdot(direction, product)) >= 0.3 * float(jnp.vdot(direction, direction))


_X = np.random.default_rng(0).uniform(0, 1, (40, 20)).astype(np.float32)
_Y = np.arange(40) % 10


@pytest.mark.parametrize("arguments, message", [
    ((_X[:, :0], _Y, 0.1), r"images.*\(40, 0\)"),
    (((_X * 255).astype(np.uint8), _Y, 0.1), "images.*uint8"),
    ((_X, _Y, 0.0), r"l2reg.*0\.0"),
    ((_X, _Y, "0.1"), r"l2reg.*'0\.1'"),
    ((_X, _Y, np.array([0.1, 0.2])), r"l2reg.*\(2,\)"),
    ((_X, _Y[:10], 0.1), "40 images but 10 labels"),
    ((_X, np.full((40, 10), 0.2, np.float32), 0.1), "labels.*probabilities"),
])
def test_the_evaluation_fit_refuses_bad_input_naming_the_argument(arguments, message):
    with pytest.raises(ValueError, match=message):
        model.fit_logistic_regression(*arguments)

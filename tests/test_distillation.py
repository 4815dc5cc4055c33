import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill import distillation, model
from distill.model import jaxopt
from tests.conftest import make_toy_dataset


def test_seed_preset_is_the_original_notebook():
    seed = distillation.PRESETS["seed"]
    assert (seed.dataset, seed.images_per_class, seed.steps, seed.seed) == ("mnist", 1, 50, 0)
    assert (seed.l2reg, seed.inner_tol, seed.inner_maxiter, seed.outer_tol) == (0.1, 1e-3, 500, 1e-3)
    images, labels = distillation.initial_distilled_set(seed)
    np.testing.assert_array_equal(images, jax.random.normal(jax.random.PRNGKey(0), (10, 784)) / 784)
    np.testing.assert_array_equal(labels, jnp.arange(10))


def test_config_accepts_numpy_numbers():
    assert distillation.DistillConfig(l2reg=np.float32(0.5), steps=np.int64(3)).l2reg == 0.5


def test_initial_set_orders_labels_by_class():
    config = distillation.DistillConfig(images_per_class=3, seed=5)
    images, labels = distillation.initial_distilled_set(config, num_classes=4, num_features=7)
    assert images.shape == (12, 7)
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])


@pytest.mark.parametrize("field, value, message", [
    ("images_per_class", 0, "images_per_class must be a positive integer"),
    ("steps", 2.5, "steps must be a positive integer"),
    ("l2reg", -0.1, "l2reg must be a positive finite number"),
    ("l2reg", math.nan, "l2reg must be a positive finite number"),
    ("inner_tol", math.inf, "inner_tol must be a positive finite number"),
    ("l2reg", "0.1", "l2reg must be a positive finite number"),
    ("learning_rate", 0.0, "learning_rate must be a positive finite number"),
    ("seed", 1.5, "seed must be an integer"),
    ("warm_start", "yes", "warm_start must be True or False"),
    ("linear_solve", "lu", r"linear_solve must be one of \['cg', 'normal_cg'\], got 'lu'"),
    ("outer_optimizer", "sgd", "outer_optimizer must be one of .*, got 'sgd'"),
    ("inner_solver", "newton", r"inner_solver must be one of \['gradient_descent', 'lbfgs'\], got 'newton'"),
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        distillation.DistillConfig(**{field: value})


def test_seed_preset_lowers_the_outer_loss_and_matches_jaxopt_run(toy_dataset):
    train = toy_dataset.train
    config = dataclasses.replace(distillation.PRESETS["seed"], steps=8)
    result = distillation.distill(train.images, train.labels, config, progress=False)
    assert result.steps == len(result.loss_history) - 1 <= 8
    assert result.final_loss < result.loss_history[0] - 0.1
    assert result.images.shape == (10, 20) and result.images.dtype == np.float32
    assert result.inner_not_converged == 0

    # The step-by-step loop takes the same steps as jaxopt's own run().
    images, labels = distillation.initial_distilled_set(config, 10, 20)
    outer_loss, _ = distillation.make_outer_loss(config, labels, 20)
    solver = jaxopt.GradientDescent(fun=outer_loss, tol=config.outer_tol, maxiter=config.steps)
    expected = solver.run(images, jnp.asarray(train.images), jnp.asarray(train.labels)).params
    np.testing.assert_allclose(result.images, expected, atol=1e-5)
    np.testing.assert_allclose(result.final_loss,
                               outer_loss(expected, train.images, train.labels), rtol=1e-5)


def test_hypergradient_matches_finite_differences(toy_dataset):
    train = toy_dataset.train
    config = distillation.DistillConfig(inner_tol=1e-6, inner_maxiter=5000)
    images, labels = distillation.initial_distilled_set(config, 10, 20)
    images = images + jnp.asarray(train.images[::40])  # one real image per class
    outer_loss, outer_loss_and_inner = distillation.make_outer_loss(config, labels, 20)
    loss, inner = outer_loss_and_inner(images, train.images, train.labels)
    assert float(inner.state.error) <= 1e-6
    np.testing.assert_allclose(loss, outer_loss(images, train.images, train.labels), rtol=1e-6)
    gradient = jax.grad(outer_loss)(images, train.images, train.labels)
    direction = gradient / jnp.linalg.norm(gradient)
    epsilon = 1e-2
    finite_difference = (outer_loss(images + epsilon * direction, train.images, train.labels)
                         - outer_loss(images - epsilon * direction, train.images, train.labels)) / (2 * epsilon)
    np.testing.assert_allclose(finite_difference, jnp.vdot(gradient, direction), rtol=2e-2)


def test_unconverged_inner_solves_are_reported(toy_dataset):
    train = toy_dataset.train
    config = dataclasses.replace(distillation.PRESETS["seed"], steps=2, inner_maxiter=2)
    with pytest.warns(RuntimeWarning, match="stopped at maxiter=2 before reaching tol"):
        result = distillation.distill(train.images, train.labels, config, progress=False)
    assert result.inner_not_converged == len(result.inner_errors) > 0


def test_init_images_of_the_wrong_shape_are_refused(toy_dataset):
    with pytest.raises(ValueError, match=r"init_images must have shape \(10, 20\)"):
        distillation.distill(toy_dataset.train.images, toy_dataset.train.labels,
                             init_images=np.zeros((10, 21)), progress=False)


def test_callback_sees_every_step_with_its_inner_solution(toy_dataset):
    train = toy_dataset.train
    config = distillation.DistillConfig(steps=3)
    seen = []

    def callback(step, images, inner_params):
        loss = model.data_loss(inner_params, train.images, train.labels)
        seen.append((step, np.asarray(images).shape, float(loss)))

    result = distillation.distill(train.images, train.labels, config, progress=False,
                                  callback=callback)
    assert [step for step, _, _ in seen] == list(range(result.steps + 1))
    assert all(shape == (10, 20) for _, shape, _ in seen)
    # The inner solution handed to the callback is the one the loss was computed with.
    np.testing.assert_allclose([loss for _, _, loss in seen], result.loss_history, rtol=1e-6)


def test_unrolled_and_implicit_hypergradients_agree_when_the_inner_solve_converges(toy_dataset):
    train = toy_dataset.train
    config = distillation.DistillConfig(inner_tol=1e-6, inner_maxiter=400)
    images, labels = distillation.initial_distilled_set(config, 10, 20)
    images = images + jnp.asarray(train.images[::40])
    implicit, _ = distillation.make_outer_loss(config, labels, 20)
    unrolled, _ = distillation.make_outer_loss(config, labels, 20, implicit_diff=False)
    g_implicit = jax.grad(implicit)(images, train.images, train.labels)
    g_unrolled = jax.grad(unrolled)(images, train.images, train.labels)
    np.testing.assert_allclose(g_unrolled, g_implicit, rtol=1e-3, atol=1e-5)
    # Truncated after a few iterations, the unrolled derivative is that of another function.
    short = distillation.DistillConfig(inner_tol=1e-6, inner_maxiter=3)
    truncated, _ = distillation.make_outer_loss(short, labels, 20, implicit_diff=False)
    g_truncated = jax.grad(truncated)(images, train.images, train.labels)
    assert float(jnp.linalg.norm(g_truncated - g_implicit)) > 0.1 * float(jnp.linalg.norm(g_implicit))


def test_the_fast_default_solves_the_same_problem_accurately():
    """L-BFGS outer steps, warm-started tight inner solves: W* really is the inner solution."""
    train = make_toy_dataset(num_features=100).train
    config = distillation.DistillConfig(steps=10)
    assert (config.warm_start, config.linear_solve, config.outer_optimizer) == (True, "cg", "lbfgs")
    result = distillation.distill(train.images, train.labels, config, progress=False)
    assert result.inner_not_converged == 0 and max(result.inner_errors) <= 1e-6
    assert result.final_loss < 0.25 * result.loss_history[0]
    # The reported loss is that of the reported model, which solves the inner problem.
    np.testing.assert_allclose(model.data_loss(result.inner_params, train.images, train.labels),
                               result.final_loss, rtol=1e-5)
    W, _ = model.fit_logistic_regression(result.images, result.labels, config.l2reg, tol=1e-6)
    np.testing.assert_allclose(result.inner_params, W, atol=1e-4)
    # Warm starts change where the inner solver starts, not what the loop computes.
    cold = distillation.distill(train.images, train.labels,
                                dataclasses.replace(config, warm_start=False), progress=False)
    np.testing.assert_allclose(cold.loss_history, result.loss_history, rtol=1e-3)


def test_warm_start_does_not_change_the_hypergradient(toy_dataset):
    train = toy_dataset.train
    config = distillation.DistillConfig(inner_tol=1e-6)
    images, labels = distillation.initial_distilled_set(config, 10, 20)
    images = images + jnp.asarray(train.images[::40])
    outer_loss, outer_loss_and_inner = distillation.make_outer_loss(config, labels, 20)
    _, inner = outer_loss_and_inner(images, train.images, train.labels)
    nearby = inner.params + 0.01
    g_cold = jax.grad(outer_loss)(images, train.images, train.labels)
    g_warm = jax.grad(outer_loss)(images, train.images, train.labels, nearby)
    np.testing.assert_allclose(g_warm, g_cold, rtol=1e-3, atol=1e-6)
    _, warm = outer_loss_and_inner(images, train.images, train.labels, inner.params)
    assert int(warm.state.iter_num) < int(inner.state.iter_num)


@pytest.mark.parametrize("overrides", [{"outer_optimizer": "adam", "learning_rate": 0.05},
                                       {"outer_optimizer": "gradient_descent"},
                                       {"linear_solve": "normal_cg", "warm_start": False}])
def test_other_solvers_lower_the_outer_loss_too(overrides):
    train = make_toy_dataset(num_features=100).train
    config = distillation.DistillConfig(steps=6, **overrides)
    result = distillation.distill(train.images, train.labels, config, progress=False)
    assert result.steps == 6 and result.inner_not_converged == 0
    assert result.final_loss < 0.8 * result.loss_history[0]


def test_the_outer_step_is_compiled_once_and_reused():
    train = make_toy_dataset(num_features=100).train
    config = distillation.DistillConfig(steps=3, inner_tol=2e-6)  # a setting no other test uses
    first = distillation.distill(train.images, train.labels, config, progress=False)
    again = distillation.distill(train.images, train.labels,
                                 dataclasses.replace(config, seed=7, steps=4), progress=False)
    assert first.compile_seconds > 0
    assert again.compile_seconds == 0
    assert not np.allclose(first.images, again.images)


def test_checkpoints_hold_the_last_completed_step_when_interrupted():
    train = make_toy_dataset(num_features=100).train
    config = distillation.DistillConfig(steps=20)
    saved = []

    def checkpoint(images, labels, l2reg, loss_history):
        assert l2reg == config.l2reg
        saved.append((images.copy(), labels.copy(), loss_history))

    def interrupt_at_step_5(step, images, inner_params):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distillation.distill(train.images, train.labels, config, progress=False,
                             callback=interrupt_at_step_5, checkpoint=checkpoint,
                             checkpoint_every=2)
    assert [len(history) for _, _, history in saved] == [3, 5, 5]  # steps 2, 4, then 4 again
    uninterrupted = distillation.distill(train.images, train.labels,
                                         dataclasses.replace(config, steps=4), progress=False)
    np.testing.assert_allclose(saved[-1][0], uninterrupted.images, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(saved[-1][2], uninterrupted.loss_history, rtol=1e-6)
    np.testing.assert_array_equal(saved[-1][1], np.arange(10))


def _finite_difference_check(objective, variables, name, train, epsilon, rtol):
    """Compare the hypergradient of ``variables[name]`` with central differences."""
    gradient = jax.grad(lambda v: objective(v, train.images, train.labels)[0])(variables)[name]
    direction = gradient / jnp.linalg.norm(gradient)  # the derivative there is |gradient|

    def shifted(sign):
        moved = dict(variables, **{name: variables[name] + sign * epsilon * direction})
        return objective(moved, train.images, train.labels)[0]

    finite_difference = (shifted(1) - shifted(-1)) / (2 * epsilon)
    np.testing.assert_allclose(finite_difference, jnp.vdot(gradient, direction), rtol=rtol)


@pytest.mark.parametrize("name", ["images", "log_l2reg", "label_logits"])
def test_hypergradients_of_every_learned_quantity_match_finite_differences(toy_dataset, name):
    jax.config.update("jax_enable_x64", True)
    try:
        train = toy_dataset.train
        config = distillation.DistillConfig(inner_tol=1e-10, inner_maxiter=20000,
                                            learn_l2reg=True, learn_labels=True)
        images, labels = distillation.initial_distilled_set(config, 10, 20)
        images = jnp.asarray(images, jnp.float64) + jnp.asarray(train.images[::40], jnp.float64)
        variables = distillation.initial_variables(config, images, labels)
        variables = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), variables)
        variables["label_logits"] = variables["label_logits"] + 0.3 * jax.random.normal(
            jax.random.PRNGKey(1), variables["label_logits"].shape)
        objective = distillation.make_outer_objective(
            config, labels, 20,
            implicit_diff_solve=functools.partial(jaxopt.linear_solve.solve_cg, tol=1e-12))
        _, inner = objective(variables, train.images, train.labels)
        assert float(inner.state.error) <= 1e-10
        _finite_difference_check(objective, variables, name, train, epsilon=1e-3, rtol=1e-4)
    finally:
        jax.config.update("jax_enable_x64", False)


def test_learning_l2reg_and_labels_lowers_the_loss_below_the_fixed_setting():
    train = make_toy_dataset(num_features=100).train
    fixed = distillation.distill(train.images, train.labels,
                                 distillation.DistillConfig(steps=15), progress=False)
    learned = distillation.distill(
        train.images, train.labels,
        distillation.DistillConfig(steps=15, learn_l2reg=True, learn_labels=True),
        progress=False)
    assert learned.inner_not_converged == 0
    assert learned.final_loss < fixed.final_loss
    assert learned.l2reg != 0.1 and learned.labels.shape == (10, 10)
    # The l2reg path: from the configured start to the result, one entry per loss.
    assert len(learned.l2reg_history) == len(learned.loss_history)
    assert learned.l2reg_history[0] == pytest.approx(0.1)
    assert learned.l2reg_history[-1] == pytest.approx(learned.l2reg)
    assert fixed.l2reg_history == [pytest.approx(0.1)] * len(fixed.loss_history)
    assert learned.labels.dtype == np.float32
    np.testing.assert_allclose(learned.labels.sum(axis=1), 1.0, rtol=1e-5)
    # The result describes the model that was trained: refit on it, same loss.
    W, _ = model.fit_logistic_regression(learned.images, learned.labels, learned.l2reg, tol=1e-6)
    np.testing.assert_allclose(model.data_loss(W, train.images, train.labels),
                               learned.final_loss, rtol=1e-3)

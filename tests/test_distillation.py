import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill import distillation, model
from distill.model import jaxopt


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
])
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        distillation.DistillConfig(**{field: value})


def test_distill_lowers_the_outer_loss_and_matches_jaxopt_run(toy_dataset):
    train = toy_dataset.train
    config = distillation.DistillConfig(steps=8)
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
    config = distillation.DistillConfig(steps=2, inner_maxiter=2)
    with pytest.warns(RuntimeWarning, match="stopped at maxiter=2 before reaching tol"):
        result = distillation.distill(train.images, train.labels, config, progress=False)
    assert result.inner_not_converged == len(result.inner_errors) > 0


def test_init_images_of_the_wrong_shape_are_refused(toy_dataset):
    with pytest.raises(ValueError, match=r"init_images must have shape \(10, 20\)"):
        distillation.distill(toy_dataset.train.images, toy_dataset.train.labels,
                             init_images=np.zeros((10, 21)), progress=False)


def test_a_nan_outer_loss_stops_the_run(toy_dataset):
    images = toy_dataset.train.images.copy()
    images[0, 0] = np.nan
    with pytest.raises(FloatingPointError, match="outer loss became nan"):
        distillation.distill(images, toy_dataset.train.labels, progress=False)


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

"""distill.distillation: the outer objective, its hypergradient, and the distillation loop."""

import dataclasses
import functools
import typing
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill import distillation, model
from distill.config import PRESETS, DistillConfig
from distill.model import jaxopt
from tests.conftest import make_toy_dataset

TOY = make_toy_dataset()
X, Y = TOY.train.images, TOY.train.labels

#: The recommended setting with soft labels learned too: everything the loop can learn.
LEARNED_LABELS = dataclasses.replace(PRESETS["learned-l2reg"], learn_labels=True)


def _loss(objective):
    """The scalar outer loss of an objective that returns ``(loss, inner)``."""
    def loss(variables, train_images, train_labels, init_params=None):
        return objective(variables, train_images, train_labels, init_params)[0]

    return loss


def _near_real_images(config):
    """The initial noise plus one real toy image per class: a point with a useful gradient."""
    images, labels = distillation.initial_distilled_set(config, 10, 20)
    return images + jnp.asarray(X[::40]), labels


# --- the starting point ---------------------------------------------------------------

def test_the_seed_preset_starts_from_the_original_notebooks_noise():
    images, labels = distillation.initial_distilled_set(PRESETS["seed"])
    np.testing.assert_array_equal(images, jax.random.normal(jax.random.PRNGKey(0), (10, 784)) / 784)
    np.testing.assert_array_equal(labels, jnp.arange(10))


def test_initial_set_orders_labels_by_class():
    config = DistillConfig(images_per_class=3, seed=5)
    images, labels = distillation.initial_distilled_set(config, num_classes=4, num_features=7)
    assert images.shape == (12, 7)
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])


def test_initial_variables_hold_what_the_configuration_learns():
    images, labels = distillation.initial_distilled_set(DistillConfig(), 10, 20)
    assert set(distillation.initial_variables(DistillConfig(), images, labels)) == {"images"}
    config = DistillConfig(l2reg=0.3, learn_l2reg=True, learn_labels=True)
    variables = distillation.initial_variables(config, images, labels)
    assert float(variables["log_l2reg"]) == pytest.approx(np.log(0.3))
    l2reg, targets = distillation.l2reg_and_targets(config, variables, labels)
    assert float(l2reg) == pytest.approx(0.3)
    # Soft labels start close to the hard ones.
    np.testing.assert_array_equal(np.argmax(targets, axis=1), labels)
    assert float(jnp.min(jnp.max(targets, axis=1))) > 0.9


# --- the objective and its hypergradient ----------------------------------------------

def test_seed_preset_lowers_the_outer_loss_and_matches_jaxopt_run():
    config = dataclasses.replace(PRESETS["seed"], steps=8)
    result = distillation.distill(X, Y, config, progress=False)
    assert result.steps == len(result.loss_history) - 1 <= 8
    assert result.final_loss < result.loss_history[0] - 0.1
    assert result.images.shape == (10, 20) and result.images.dtype == np.float32
    assert result.inner_not_converged == 0

    # The step-by-step loop takes the same steps as jaxopt's own run().
    images, labels = distillation.initial_distilled_set(config, 10, 20)
    outer_loss = _loss(distillation.make_outer_objective(config, labels, 20))
    solver = jaxopt.GradientDescent(fun=outer_loss, tol=config.outer_tol, maxiter=config.steps)
    expected = solver.run(images, jnp.asarray(X), jnp.asarray(Y)).params
    np.testing.assert_allclose(result.images, expected, atol=1e-5)
    np.testing.assert_allclose(result.final_loss, outer_loss(expected, X, Y), rtol=1e-5)


def test_the_objective_returns_the_inner_solution_and_warm_starts_do_not_change_its_gradient():
    config = DistillConfig()
    images, labels = _near_real_images(config)
    objective = distillation.make_outer_objective(config, labels, 20)
    value_and_grad = jax.jit(jax.value_and_grad(objective, has_aux=True))
    ones = model.init_inner_params(20, 10)
    (loss, inner), g_cold = value_and_grad(images, X, Y, ones)
    assert float(inner.state.error) <= config.inner_tol
    np.testing.assert_allclose(loss, model.data_loss(inner.params, X, Y), rtol=1e-6)
    # A warm start saves inner iterations and changes neither the loss nor its gradient:
    # implicit differentiation does not depend on where the inner solver started.
    (warm_loss, warm), _ = value_and_grad(images, X, Y, inner.params)
    assert int(warm.state.iter_num) < int(inner.state.iter_num) // 2
    np.testing.assert_allclose(warm_loss, loss, rtol=1e-5)
    (_, nearby), g_nearby = value_and_grad(images, X, Y, inner.params + 0.01)
    assert float(nearby.state.error) <= config.inner_tol
    np.testing.assert_allclose(g_nearby, g_cold, rtol=1e-3, atol=1e-6)


def test_hypergradients_of_every_learned_quantity_match_finite_differences(x64):
    """In float64, to a relative error of 1e-4: images, log(l2reg) and label logits."""
    config = DistillConfig(inner_tol=1e-10, inner_maxiter=20000, learn_l2reg=True,
                           learn_labels=True)
    images, labels = distillation.initial_distilled_set(config, 10, 20)
    images = jnp.asarray(images, jnp.float64) + jnp.asarray(X[::40], jnp.float64)
    variables = distillation.initial_variables(config, images, labels)
    variables = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), variables)
    variables["label_logits"] = variables["label_logits"] + 0.3 * jax.random.normal(
        jax.random.PRNGKey(1), variables["label_logits"].shape)
    objective = distillation.make_outer_objective(
        config, labels, 20,
        implicit_diff_solve=functools.partial(jaxopt.linear_solve.solve_cg, tol=1e-12))
    _, inner = objective(variables, X, Y)
    assert float(inner.state.error) <= 1e-10
    loss = jax.jit(_loss(objective))
    gradients = jax.grad(loss)(variables, X, Y)
    assert set(gradients) == {"images", "log_l2reg", "label_logits"}
    epsilon = 1e-3
    for name, gradient in gradients.items():
        direction = gradient / jnp.linalg.norm(gradient)  # the derivative there is |gradient|

        def shifted(sign):
            moved = dict(variables, **{name: variables[name] + sign * epsilon * direction})
            return loss(moved, X, Y)

        finite_difference = (shifted(1) - shifted(-1)) / (2 * epsilon)
        np.testing.assert_allclose(finite_difference, jnp.vdot(gradient, direction), rtol=1e-4,
                                   err_msg=name)


def test_unrolled_and_implicit_hypergradients_agree_when_the_inner_solve_converges():
    config = DistillConfig(inner_maxiter=100)  # it converges in 84 iterations
    images, labels = _near_real_images(config)
    implicit = _loss(distillation.make_outer_objective(config, labels, 20))
    unrolled = _loss(distillation.make_outer_objective(config, labels, 20, implicit_diff=False))
    g_implicit = jax.grad(implicit)(images, X, Y)
    g_unrolled = jax.grad(unrolled)(images, X, Y)
    np.testing.assert_allclose(g_unrolled, g_implicit, rtol=1e-3, atol=1e-5)
    # Truncated after a few iterations, the unrolled derivative is that of another function.
    short = DistillConfig(inner_maxiter=3)
    truncated = _loss(distillation.make_outer_objective(short, labels, 20, implicit_diff=False))
    g_truncated = jax.grad(truncated)(images, X, Y)
    assert float(jnp.linalg.norm(g_truncated - g_implicit)) > 0.1 * float(jnp.linalg.norm(g_implicit))


# --- distill(): the loop ----------------------------------------------------------------

def test_the_fast_default_solves_the_same_problem_accurately(toy_train):
    """L-BFGS outer steps, warm-started tight inner solves: W* really is the inner solution."""
    config = DistillConfig(steps=10)
    result = distillation.distill(toy_train.images, toy_train.labels, config, progress=False)
    assert result.inner_not_converged == 0 and max(result.inner_errors) <= config.inner_tol
    assert result.final_loss < 0.25 * result.loss_history[0]
    # The reported loss is that of the reported model, which solves the inner problem.
    np.testing.assert_allclose(model.data_loss(result.inner_params, toy_train.images,
                                               toy_train.labels), result.final_loss, rtol=1e-5)
    W, _ = model.fit_logistic_regression(result.images, result.labels, config.l2reg, tol=1e-6)
    np.testing.assert_allclose(result.inner_params, W, atol=1e-4)


def test_adam_runs_all_its_steps_and_lowers_the_outer_loss(toy_train):
    # (Outer gradient descent, JAXopt's normal_cg and cold starts: the seed preset test.)
    config = DistillConfig(steps=6, outer_optimizer="adam", learning_rate=0.05)
    result = distillation.distill(toy_train.images, toy_train.labels, config, progress=False)
    assert result.steps == 6 and result.stop_reason == "max_steps"
    assert result.inner_not_converged == 0
    assert result.final_loss < 0.8 * result.loss_history[0]


def test_callback_sees_every_step_with_its_inner_solution():
    seen = []

    def callback(step, images, inner_params):
        seen.append((step, np.asarray(images).shape, float(model.data_loss(inner_params, X, Y))))

    result = distillation.distill(X, Y, DistillConfig(steps=3), progress=False,
                                  callback=callback)
    assert [step for step, _, _ in seen] == list(range(result.steps + 1))
    assert all(shape == (10, 20) for _, shape, _ in seen)
    # The inner solution handed to the callback is the one the loss was computed with.
    np.testing.assert_allclose([loss for _, _, loss in seen], result.loss_history, rtol=1e-6)


def test_the_outer_step_is_compiled_once_and_reused(toy_train):
    config = DistillConfig(steps=3, inner_tol=2e-6)  # a setting no other test uses
    first = distillation.distill(toy_train.images, toy_train.labels, config, progress=False)
    again = distillation.distill(toy_train.images, toy_train.labels,
                                 dataclasses.replace(config, seed=7, steps=4), progress=False)
    assert first.compile_seconds > 0
    assert again.compile_seconds == 0
    assert not np.allclose(first.images, again.images)


def test_checkpoints_hold_the_last_completed_step_when_interrupted(toy_train):
    config = DistillConfig(steps=20)
    saved = []

    def checkpoint(images, labels, l2reg, loss_history):
        assert l2reg == config.l2reg
        saved.append((images.copy(), labels.copy(), loss_history))

    def interrupt_at_step_5(step, images, inner_params):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distillation.distill(toy_train.images, toy_train.labels, config, progress=False,
                             callback=interrupt_at_step_5, checkpoint=checkpoint,
                             checkpoint_every=2)
    assert [len(history) for _, _, history in saved] == [3, 5, 5]  # steps 2, 4, then 4 again
    uninterrupted = distillation.distill(toy_train.images, toy_train.labels,
                                         dataclasses.replace(config, steps=4), progress=False)
    np.testing.assert_allclose(saved[-1][0], uninterrupted.images, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(saved[-1][2], uninterrupted.loss_history, rtol=1e-6)
    np.testing.assert_array_equal(saved[-1][1], np.arange(10))


def test_learning_l2reg_and_labels_lowers_the_loss_below_the_fixed_setting(toy_train):
    images, labels = toy_train.images, toy_train.labels
    fixed = distillation.distill(images, labels, DistillConfig(steps=15), progress=False)
    learned = distillation.distill(
        images, labels, DistillConfig(steps=15, learn_l2reg=True, learn_labels=True),
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
    np.testing.assert_allclose(model.data_loss(W, images, labels), learned.final_loss, rtol=1e-3)


def test_initial_values_replace_the_starting_point():
    images = np.asarray(X[::40], np.float32)
    soft = np.full((10, 10), 0.05, np.float32) + 0.5 * np.eye(10, dtype=np.float32)
    seen = []
    result = distillation.distill(X, Y, dataclasses.replace(LEARNED_LABELS, steps=1),
                                  init_images=images, init_l2reg=0.02, init_labels=soft,
                                  progress=False,
                                  callback=lambda step, images, _: seen.append(np.asarray(images)))
    np.testing.assert_array_equal(seen[0], images)
    assert result.l2reg_history[0] == pytest.approx(0.02)
    # The first loss is that of the model trained on exactly these images, l2reg and labels.
    W, _ = model.fit_logistic_regression(images, soft, 0.02, tol=1e-7)
    np.testing.assert_allclose(result.loss_history[0], model.data_loss(W, X, Y), rtol=1e-4)


# --- distill(): why a run stops ------------------------------------------------------

def test_stop_reasons_of_converged_and_exhausted_runs():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean run warns about nothing
        converged = distillation.distill(X, Y, DistillConfig(steps=300), progress=False)
        exhausted = distillation.distill(X, Y, DistillConfig(steps=2), progress=False)
    assert converged.stop_reason == "converged" and converged.steps < 300
    assert exhausted.stop_reason == "max_steps" and exhausted.steps == 2


def test_a_failed_line_search_stops_the_run_and_unconverged_inner_solves_are_reported():
    # One inner iteration from ones: the "hypergradient" is not that of the
    # true inner solution, soon points nowhere downhill, and the run warns.
    config = DistillConfig(steps=40, inner_maxiter=1, warm_start=False)
    with pytest.warns(RuntimeWarning) as caught:
        result = distillation.distill(X, Y, config, progress=False)
    assert result.stop_reason == "line_search_failed" and 1 <= result.steps < 40
    assert len(result.loss_history) == result.steps + 1  # the failed step is not recorded
    # The returned set is the last accepted point: its loss is the last one recorded.
    _, labels = distillation.initial_distilled_set(config, 10, 20)
    objective = distillation.make_outer_objective(config, labels, 20)
    assert float(objective(result.images, X, Y)[0]) == pytest.approx(result.final_loss, rel=1e-6)
    # Every inner solve stopped at maxiter: counted, and the warning says how far from tol.
    assert result.inner_not_converged == len(result.inner_errors) == result.steps + 1
    message = str(caught[0].message)
    assert "maxiter=1" in message and "tol=1e-06" in message
    assert f"at {result.inner_not_converged} of {len(result.inner_errors)} iterates" in message
    assert f"{max(result.inner_errors):.3g}" in message


# --- distill(): any objective ------------------------------------------------------------

def test_the_default_objective_passed_explicitly_gives_the_same_run_bit_for_bit():
    config = DistillConfig(steps=3)
    _, labels = distillation.initial_distilled_set(config, 10, 20)
    objective = distillation.make_outer_objective(config, labels, 20)
    implicit = distillation.distill(X, Y, config, progress=False)
    explicit = distillation.distill(X, Y, config, objective=objective,
                                    init_inner_params=model.init_inner_params(20, 10),
                                    progress=False)
    np.testing.assert_array_equal(explicit.images, implicit.images)
    np.testing.assert_array_equal(explicit.inner_params, implicit.inner_params)
    assert explicit.loss_history == implicit.loss_history and explicit.l2reg == implicit.l2reg
    assert explicit.steps == implicit.steps == 3


class _Inner(typing.NamedTuple):
    """What ``distill`` reads from an inner solve: ``params`` and ``state.error``."""

    params: jax.Array
    state: typing.Any


class _Error(typing.NamedTuple):
    error: jax.Array


def _ridge_fit(images, l2reg=0.1):
    """Another inner model: ridge regression onto one-hot targets, solved in closed form."""
    targets = jax.nn.one_hot(jnp.arange(len(images)) % 10, 10)  # labels 0..9 in order
    return images.T @ jnp.linalg.solve(images @ images.T + l2reg * jnp.eye(len(images)), targets)


def _ridge_objective(variables, train_images, train_labels, init_params=None):
    W = _ridge_fit(variables["images"])
    return model.data_loss(W, train_images, train_labels), _Inner(W, _Error(jnp.float32(0)))


def _counting_objective(variables, train_images, train_labels, init_params):
    """Ridge's loss, but its "inner solve" takes one step from where it starts: start + 1."""
    loss, _ = _ridge_objective(variables, train_images, train_labels)
    return loss, _Inner(init_params + 1, _Error(jnp.float32(0)))


def test_another_inner_model_runs_through_the_same_loop():
    config = DistillConfig(steps=5)
    seen = []
    result = distillation.distill(X, Y, config, objective=_ridge_objective, progress=False,
                                  callback=lambda step, images, W: seen.append(W))
    assert result.steps == 5 and len(seen) == 6
    assert result.final_loss < 0.9 * result.loss_history[0]
    # What distill reports is the ridge model's: trained on the result, the same weights and loss.
    W = _ridge_fit(jnp.asarray(result.images))
    np.testing.assert_allclose(result.inner_params, W, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result.final_loss, model.data_loss(W, X, Y), rtol=1e-5)
    # It differs from logistic regression's run from the same start.
    logistic = distillation.distill(X, Y, config, progress=False)
    assert not np.allclose(result.loss_history, logistic.loss_history)


@pytest.mark.parametrize("warm_start", [True, False])
def test_init_inner_params_starts_the_first_inner_solve(warm_start):
    starts = []
    result = distillation.distill(X, Y, DistillConfig(steps=3, warm_start=warm_start),
                                  objective=_counting_objective,
                                  init_inner_params=jnp.full((20, 10), 5.0), progress=False,
                                  callback=lambda step, images, params: starts.append(
                                      float(params[0, 0])))
    assert result.steps == 3
    # Warm starts go on from the previous solution; cold starts begin at init_inner_params.
    assert starts == ([6.0, 7.0, 8.0, 9.0] if warm_start else [6.0] * 4)


# --- distill(): bad input and precision ------------------------------------------------

@pytest.mark.parametrize("change, message", [
    (lambda: dict(train_images=X[0]), r"train_images.*\(20,\)"),
    (lambda: dict(train_images=(X * 255).astype(np.uint8)), "train_images.*uint8"),
    (lambda: dict(train_images=np.where(np.arange(20) == 3, np.inf, X)),
     r"train_images.*NaN or infinite.*\(400 of 8000\)"),
    (lambda: dict(train_images=X[:0], train_labels=Y[:0]), r"train_images.*\(0, 20\)"),
    (lambda: dict(train_labels=Y[:-1]), "400 train_images but 399 train_labels"),
    (lambda: dict(train_labels=np.where(Y == 9, 10, Y)), r"train_labels.*0\.\.9.*outside: 10"),
    (lambda: dict(train_labels=Y - 1), r"train_labels.*0\.\.9.*-1\.\.8"),
    (lambda: dict(train_labels=Y.astype(np.float32)), "train_labels.*float32"),
    (lambda: dict(train_labels=np.eye(10, dtype=np.float32)[Y]), r"train_labels.*\(400, 10\)"),
    (lambda: dict(train_labels=np.where(Y == 7, 6, Y)), r"train_labels.*class\(es\) 7"),
    (lambda: dict(num_classes=1), "num_classes.*1"),
    (lambda: dict(init_images=np.full((10, 20), np.nan, np.float32)), "init_images.*NaN"),
    (lambda: dict(init_images=np.zeros((10, 21), np.float32)),
     r"init_images.*\(10, 20\).*\(10, 21\)"),
    (lambda: dict(init_l2reg=-1.0, config=dataclasses.replace(PRESETS["learned-l2reg"], steps=1)),
     r"init_l2reg.*-1\.0"),
    (lambda: dict(init_l2reg=0.5), r"init_l2reg=0\.5.*l2reg=0\.1"),
    (lambda: dict(init_labels=np.full((10, 10), 0.1, np.float32)), "init_labels.*learn_labels"),
    (lambda: dict(init_labels=np.full((10, 10), 0.5, np.float32),
                  config=DistillConfig(learn_labels=True)), "init_labels.*probabilities"),
    (lambda: dict(init_labels=np.full((10, 5), 0.2, np.float32),
                  config=DistillConfig(learn_labels=True)), r"init_labels.*\(10, 5\)"),
    (lambda: dict(checkpoint_every=0), "checkpoint_every.*0"),
])
def test_distill_refuses_bad_input_naming_the_argument_and_the_value(change, message):
    arguments = dict(train_images=X, train_labels=Y, progress=False)
    arguments.update(change())
    with pytest.raises(ValueError, match=message):
        distillation.distill(**arguments)


@pytest.mark.parametrize("config", [DistillConfig(steps=4),
                                    dataclasses.replace(LEARNED_LABELS, steps=4)],
                         ids=["fixed-l2reg", "learned"])
def test_the_same_seed_gives_the_same_set_bit_for_bit(config):
    first = distillation.distill(X, Y, config, progress=False)
    second = distillation.distill(X, Y, config, progress=False)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert first.l2reg == second.l2reg and first.loss_history == second.loss_history
    other = distillation.distill(X, Y, dataclasses.replace(config, seed=1), progress=False)
    assert not np.array_equal(first.images, other.images)


def test_float64_data_in_64_bit_mode_are_distilled_in_float32(x64):
    result = distillation.distill(X.astype(np.float64), Y, DistillConfig(steps=2), progress=False)
    reference = distillation.distill(X, Y, DistillConfig(steps=2), progress=False)
    assert result.images.dtype == np.float32
    np.testing.assert_allclose(result.loss_history, reference.loss_history, rtol=1e-5)

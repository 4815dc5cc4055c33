"""distill.outer: each outer solver's init and step, on small problems whose answer is known."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill import outer
from distill.model import jaxopt

# f(v) = 1/2 sum(d v^2) - b . v: convex, minimized at v = b / d.
CURVATURES = jnp.array([1.0, 2.0, 4.0])


def quadratic(variables, b):
    """The outer-solver interface: ``fun(variables, *args) -> (loss, aux)``."""
    v = variables["v"]
    return 0.5 * jnp.sum(CURVATURES * v ** 2) - jnp.vdot(b, v), {"twice": 2 * v}


START = {"v": jnp.zeros(3)}
B = jnp.array([1.0, -1.0, 2.0])


def test_lbfgs_decreases_every_step_then_fails_where_float32_sees_no_decrease():
    solver = outer.Lbfgs(quadratic)
    state = solver.init(START, B)
    assert float(state.value) == 0.0 and not state.failed
    assert state.error == pytest.approx(float(jnp.linalg.norm(B)))  # the gradient norm
    variables, steps = START, 0
    while steps < 30:
        new_variables, new_state = solver.step(variables, state, B)
        if new_state.failed:
            break
        # An accepted step lowers the loss (Armijo): never a step that keeps it.
        assert float(new_state.value) < float(state.value), f"step {steps + 1}"
        variables, state, steps = new_variables, new_state, steps + 1
    # It stops because no trial lowers the loss in float32, at the minimum:
    # the loss there is flat to within float32 (its changes are ~1e-8 of 1.25).
    assert new_state.failed and 5 <= steps <= 12
    np.testing.assert_array_equal(new_variables["v"], variables["v"])
    np.testing.assert_allclose(variables["v"], B / CURVATURES, rtol=1e-3)
    # The state describes the returned variables: their loss and auxiliary output.
    loss, aux = quadratic(variables, B)
    assert float(state.value) == pytest.approx(float(loss))
    np.testing.assert_allclose(state.aux["twice"], aux["twice"])
    assert float(state.value) == pytest.approx(-0.5 * float(jnp.sum(B ** 2 / CURVATURES)),
                                               rel=1e-6)


def _misleading(variables):
    """Loss sum(v^2) with the gradient's sign flipped: every step along it climbs."""
    v = variables["v"]
    value = jnp.sum(v ** 2)
    return value - 2 * (value - jax.lax.stop_gradient(value)), None


def _flat_in_float32(variables):
    """1e4 + sum((v - 1)^2) near v = 1: float32 cannot see the decrease its gradient promises."""
    return 1e4 + jnp.sum((variables["v"] - 1.0) ** 2), None


@pytest.mark.parametrize("fun, start", [(_misleading, jnp.ones(3)),
                                        (_flat_in_float32, jnp.full(3, 1.001))],
                         ids=["wrong-gradient", "flat-in-float32"])
def test_lbfgs_fails_and_stays_put_when_no_trial_lowers_the_loss(fun, start):
    solver = outer.Lbfgs(fun)
    start = {"v": start}
    state = solver.init(start)
    assert state.error > 1e-3  # the gradient promises a decrease
    variables, after = solver.step(start, state)
    assert after.failed
    np.testing.assert_array_equal(variables["v"], start["v"])
    assert float(after.value) == float(state.value) and after.error == state.error


def _lbfgs_first_step(loss):
    """One L-BFGS step on ``loss(v)`` from v = (1, 1, 1)."""
    solver = outer.Lbfgs(lambda variables: (loss(variables["v"]), None))
    start = {"v": jnp.ones(3)}
    return solver.step(start, solver.init(start))


def test_lbfgs_steps_back_from_a_nan_trial_point():
    # Without NaN, the first step lands at v = 0.42265. With NaN wherever
    # sum(v) < 1.5, that trial is rejected and half the step taken.
    clean_variables, clean = _lbfgs_first_step(lambda v: jnp.sum(v ** 2))
    full_step = float(clean_variables["v"][0])
    assert full_step == pytest.approx(0.42265, rel=1e-4)
    variables, state = _lbfgs_first_step(
        lambda v: jnp.where(jnp.sum(v) < 1.5, jnp.nan, jnp.sum(v ** 2)))
    assert not state.failed and np.isfinite(float(state.value))
    np.testing.assert_allclose(variables["v"], 1 - (1 - full_step) / 2, rtol=1e-5)


def test_lbfgs_raises_when_every_trial_point_is_nan():
    with pytest.raises(FloatingPointError, match="NaN or infinite at every trial point"):
        _lbfgs_first_step(lambda v: jnp.where(jnp.all(v == 1), jnp.sum(v ** 2), jnp.nan))


def test_lbfgs_raises_on_a_nan_hypergradient_at_a_finite_loss():
    # A finite loss whose gradient is NaN (the untaken branch of where()).
    with pytest.raises(FloatingPointError, match="hypergradient became nan"):
        _lbfgs_first_step(lambda v: jnp.sum(v ** 2) + jnp.where(True, 0.0, jnp.sqrt(-jnp.sum(v))))


def test_gradient_descent_is_jaxopts_update_and_reports_its_step_norm():
    solver = outer.GradientDescent(quadratic)
    reference = jaxopt.GradientDescent(fun=quadratic, has_aux=True)
    state = solver.init(START, B)
    reference_state = reference.init_state(START, B)
    assert state.error == float(reference_state.error) == np.inf  # no step taken yet
    variables, reference_variables = START, START
    for _ in range(3):
        previous = variables
        variables, state = solver.step(variables, state, B)
        reference_variables, reference_state = reference.update(reference_variables,
                                                                reference_state, B)
        np.testing.assert_allclose(variables["v"], reference_variables["v"], rtol=1e-6)
        assert state.error == pytest.approx(float(reference_state.error), rel=1e-6)
        # JAXopt's error: the norm of the step divided by the next step size.
        step_norm = float(jnp.linalg.norm(variables["v"] - previous["v"]))
        assert state.error == pytest.approx(step_norm / float(state.internal.stepsize),
                                            rel=1e-5)
        assert not state.failed
        assert float(state.value) == pytest.approx(float(quadratic(variables, B)[0]), rel=1e-6)
    assert float(state.value) < 0  # below the start's loss, 0


def test_adam_takes_learning_rate_sized_steps_and_never_reports_convergence():
    solver = outer.Adam(quadratic, learning_rate=0.1)
    state = solver.init(START, B)
    assert state.error == np.inf and not state.failed
    variables, state = solver.step(START, state, B)
    # Adam's first step is the learning rate along the sign of -gradient = sign(b).
    np.testing.assert_allclose(variables["v"], 0.1 * jnp.sign(B), rtol=1e-5)
    assert state.error == np.inf and not state.failed
    assert float(state.value) == pytest.approx(float(quadratic(variables, B)[0]), rel=1e-6)
    np.testing.assert_allclose(state.aux["twice"], 2 * variables["v"])
    for _ in range(200):
        variables, state = solver.step(variables, state, B)
    assert state.error == np.inf
    np.testing.assert_allclose(variables["v"], B / CURVATURES, atol=0.05)


@pytest.mark.parametrize("name, kind", [("lbfgs", outer.Lbfgs),
                                        ("gradient_descent", outer.GradientDescent),
                                        ("adam", outer.Adam)])
def test_make_outer_solver_builds_the_named_solver(name, kind):
    assert isinstance(outer.make_outer_solver(name, quadratic), kind)


def test_make_outer_solver_refuses_an_unknown_name():
    with pytest.raises(ValueError, match="'sgd'"):
        outer.make_outer_solver("sgd", quadratic)

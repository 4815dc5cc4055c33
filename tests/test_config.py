"""distill.config: the run's settings, their checks, the presets and the stored form."""

import dataclasses
import json
import math

import numpy as np
import pytest

from distill import config as config_module
from distill import distillation
from distill.config import PRESETS, DistillConfig, NetworkConfig


@pytest.mark.parametrize("field, value, message", [
    ("images_per_class", 0, "images_per_class.*0"),
    ("steps", 2.5, "steps.*2.5"),
    ("inner_maxiter", -1, "inner_maxiter.*-1"),
    ("l2reg", -0.1, r"l2reg.*-0\.1"),
    ("l2reg", math.nan, "l2reg.*nan"),
    ("l2reg", "0.1", r"l2reg.*'0\.1'"),
    ("inner_tol", math.inf, "inner_tol.*inf"),
    ("outer_tol", 0.0, r"outer_tol.*0\.0"),
    ("learning_rate", 0.0, r"learning_rate.*0\.0"),
    ("seed", 1.5, r"seed.*1\.5"),
    ("seed", True, "seed.*True"),
    ("warm_start", "yes", "warm_start.*'yes'"),
    ("learn_l2reg", 1, "learn_l2reg.*1"),
    ("linear_solve", "lu", "linear_solve.*'lu'"),
    ("outer_optimizer", "sgd", "outer_optimizer.*'sgd'"),
    ("inner_solver", "newton", "inner_solver.*'newton'"),
    ("implicit_diff", "optimistix", "implicit_diff.*'optimistix'"),
])
def test_a_bad_value_is_refused_naming_the_field_and_the_value(field, value, message):
    with pytest.raises(ValueError, match=message):
        DistillConfig(**{field: value})


@pytest.mark.parametrize("field, value, message", [
    ("pool_size", 0, "pool_size.*0"),
    ("pool_learning_rate", -1e-3, r"pool_learning_rate.*-0\.001"),
    ("pool_learning_rate", math.nan, "pool_learning_rate.*nan"),
    ("l2reg", 0.0, r"l2reg.*0\.0"),
    ("learn_labels", "no", "learn_labels.*'no'"),
    ("implicit_diff", "unrolled", "implicit_diff.*'unrolled'"),
])
def test_a_bad_network_setting_is_refused_naming_the_field_and_the_value(field, value, message):
    with pytest.raises(ValueError, match=message):
        NetworkConfig(**{field: value})


def test_a_pool_learning_rate_of_zero_is_a_fixed_pool():
    assert NetworkConfig(pool_learning_rate=0.0).pool_learning_rate == 0.0


def test_choices_are_listed_when_a_name_is_wrong():
    with pytest.raises(ValueError, match=r"\['gradient_descent', 'lbfgs'\]"):
        DistillConfig(inner_solver="newton")


def test_numpy_numbers_are_accepted_and_stored_as_plain_python_values():
    config = DistillConfig(l2reg=np.float32(0.5), steps=np.int64(3), learn_l2reg=np.bool_(True))
    assert config.l2reg == 0.5 and config.steps == 3
    stored = config.to_dict()
    assert (type(stored["l2reg"]), type(stored["steps"]), type(stored["learn_l2reg"])) \
        == (float, int, bool)
    json.dumps(stored)  # what io writes


@pytest.mark.parametrize("config", [*PRESETS.values(),
                                    DistillConfig(images_per_class=3, seed=7, l2reg=0.02,
                                                  learn_labels=True, outer_optimizer="adam")],
                         ids=[*PRESETS, "custom"])
def test_to_dict_and_from_dict_round_trip_through_json(config):
    stored = json.loads(json.dumps(config.to_dict()))
    assert DistillConfig.from_dict(stored) == config
    assert set(stored) == {field.name for field in dataclasses.fields(DistillConfig)}


def test_from_dict_names_an_unknown_field_and_defaults_a_missing_one():
    with pytest.raises(ValueError, match="dataset"):
        DistillConfig.from_dict({**DistillConfig().to_dict(), "dataset": "mnist"})
    with pytest.raises(ValueError, match="colour"):
        DistillConfig.from_dict({"steps": 3, "colour": "red"})
    # A file written before a field existed still reads: the field takes its default.
    assert DistillConfig.from_dict({"steps": 3}) == DistillConfig(steps=3)
    # The values are checked as in the constructor.
    with pytest.raises(ValueError, match="steps.*0"):
        DistillConfig.from_dict({"steps": 0})


def test_the_field_defaults_are_the_fixed_l2reg_preset():
    assert PRESETS["fixed-l2reg"] == DistillConfig()
    assert set(PRESETS) == {"seed", "fixed-l2reg", "learned-l2reg"}


def test_the_recommended_preset_learns_l2reg_with_inner_lbfgs():
    learned = PRESETS["learned-l2reg"]
    assert learned.learn_l2reg and not learned.learn_labels
    assert learned.inner_solver == "lbfgs" and learned.outer_optimizer == "lbfgs"
    # The rest is the fixed-l2reg setting, with room for more steps and inner iterations.
    assert dataclasses.replace(learned, learn_l2reg=False, inner_solver="gradient_descent",
                               steps=50, inner_maxiter=2000) == DistillConfig()
    assert learned.steps > DistillConfig().steps
    assert learned.inner_maxiter > DistillConfig().inner_maxiter


def test_the_seed_preset_is_the_original_notebook():
    seed = PRESETS["seed"]
    assert (seed.images_per_class, seed.steps, seed.seed, seed.l2reg) == (1, 50, 0, 0.1)
    assert (seed.inner_solver, seed.inner_tol, seed.inner_maxiter) == ("gradient_descent", 1e-3, 500)
    assert (seed.outer_optimizer, seed.outer_tol) == ("gradient_descent", 1e-3)
    assert (seed.warm_start, seed.linear_solve) == (False, "normal_cg")
    assert not seed.learn_l2reg and not seed.learn_labels


def test_the_core_re_exports_the_configuration():
    assert distillation.DistillConfig is DistillConfig and distillation.PRESETS is PRESETS
    assert not hasattr(distillation, "CLI_DEFAULT")
    assert "dataset" not in {field.name for field in dataclasses.fields(DistillConfig)}


def test_every_named_choice_is_one_the_core_can_run():
    assert set(config_module.LINEAR_SOLVERS) == set(distillation.LINEAR_SOLVES)
    from distill import model

    assert set(config_module.INNER_SOLVERS) == set(model.INNER_SOLVERS)

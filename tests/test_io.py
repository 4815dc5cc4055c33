"""distill.io: the distilled set on disk, its stored configuration, and reading it back to resume."""

import dataclasses
import json
import re

import numpy as np
import pytest

from distill import io
from distill.config import PRESETS

LEARNED = PRESETS["learned-l2reg"]

#: What the command line stored before the configuration was JSON (cli.describe:
#: ``repr(dataclasses.asdict(CLI_DEFAULT))``, the dataset among the fields).
OLD_CONFIG = ("{'dataset': 'mnist', 'images_per_class': 1, 'steps': 300, 'seed': 0, "
              "'l2reg': 0.1, 'inner_tol': 1e-06, 'inner_maxiter': 10000, 'inner_solver': "
              "'lbfgs', 'outer_tol': 0.001, 'warm_start': True, 'linear_solve': 'cg', "
              "'outer_optimizer': 'lbfgs', 'learning_rate': 0.01, 'learn_l2reg': True, "
              "'learn_labels': False}")


def _valid(per_class=1):
    images = np.random.default_rng(0).normal(size=(10 * per_class, 784)).astype(np.float32)
    return images, np.repeat(np.arange(10), per_class), 0.1


def test_round_trip_with_plain_numpy(tmp_path):
    images, labels, l2reg = _valid()
    path = io.save_distilled(tmp_path / "sub" / "set.npz", images, labels, l2reg,
                             loss_history=[2.3, 0.6])
    with np.load(path) as arrays:  # readable without the helper
        assert set(arrays.files) == {"images", "labels", "l2reg", "loss_history"}
        np.testing.assert_array_equal(arrays["images"], images)
        np.testing.assert_array_equal(arrays["labels"], labels)
        assert float(arrays["l2reg"]) == pytest.approx(0.1)
    loaded = io.load_distilled(path)
    assert loaded.images.dtype == np.float32 and loaded.l2reg == pytest.approx(0.1)
    np.testing.assert_array_equal(loaded.loss_history, [2.3, 0.6])
    assert loaded.config is None and loaded.dataset is None
    assert [p.name for p in path.parent.iterdir()] == ["set.npz"]  # no temporary file left


def test_soft_labels_are_accepted(tmp_path):
    images, _, l2reg = _valid()
    soft = np.full((10, 10), 0.1, dtype=np.float32)
    loaded = io.load_distilled(io.save_distilled(tmp_path / "s.npz", images, soft, l2reg))
    np.testing.assert_array_equal(loaded.labels, soft)


@pytest.mark.parametrize("change, message", [
    (lambda i, l, r: (i[0], l, r), r"images.*\(784,\)"),
    (lambda i, l, r: (i.astype(np.int32), l, r), "images.*int32"),
    (lambda i, l, r: (np.where(np.arange(784) == 3, np.nan, i), l, r), r"images.*NaN.*\(10 of"),
    (lambda i, l, r: (i, l + 1, r), r"labels.*0\.\.9.*10"),
    (lambda i, l, r: (i, l[:9], r), "10 images but 9 labels"),
    (lambda i, l, r: (i, l.astype(np.float32), r), "labels.*float32"),
    (lambda i, l, r: (i, l, 0.0), r"l2reg.*0\.0"),
    (lambda i, l, r: (i, l, np.inf), "l2reg.*inf"),
])
def test_bad_sets_are_refused_naming_the_array_and_the_value(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        io.save_distilled(tmp_path / "bad.npz", *change(*_valid()))
    assert not list(tmp_path.iterdir())


def test_truncated_foreign_and_incomplete_files_are_refused_by_name(tmp_path):
    path = io.save_distilled(tmp_path / "set.npz", *_valid())
    for size in (0, 30, 200, len(path.read_bytes()) // 2):
        truncated = tmp_path / f"cut{size}.npz"
        truncated.write_bytes(path.read_bytes()[:size])
        with pytest.raises(ValueError, match=rf"{re.escape(str(truncated))} is not a readable"):
            io.load_distilled(truncated)
    other = tmp_path / "other.npz"
    np.savez(other, images=np.zeros((10, 784), np.float32))
    with pytest.raises(ValueError, match=rf"{re.escape(str(other))}.*\['l2reg', 'labels'\]"):
        io.load_distilled(other)
    with pytest.raises(FileNotFoundError):
        io.load_distilled(tmp_path / "missing.npz")


# --- the stored configuration ----------------------------------------------------

def test_the_configuration_and_dataset_round_trip_as_json(tmp_path):
    config = dataclasses.replace(LEARNED, images_per_class=2, seed=4, learn_labels=True)
    images, labels, _ = _valid(per_class=2)
    path = io.save_distilled(tmp_path / "set.npz", images, np.eye(10, dtype=np.float32)[labels],
                             0.02, loss_history=[2.3, 1.0], config=config,
                             dataset="fashion_mnist")
    loaded = io.load_distilled(path)
    assert loaded.config == config and loaded.dataset == "fashion_mnist"
    with np.load(path) as arrays:  # plain JSON, readable without the helper
        stored = json.loads(str(arrays["config"]))
    assert stored == {"dataset": "fashion_mnist", "distill": config.to_dict()}


def _old_file(path, config_text=OLD_CONFIG, history=(2.3, 0.9, 0.7)):
    """A set as the command line wrote it before the configuration was JSON."""
    images, labels, _ = _valid()
    np.savez(path, images=images, labels=labels, l2reg=np.float32(0.004),
             loss_history=np.asarray(history, np.float64), config=config_text)
    return path


def test_an_old_file_with_a_dict_literal_configuration_is_read_and_resumable(tmp_path):
    path = _old_file(tmp_path / "old.npz")
    loaded = io.load_distilled(path)
    assert loaded.config == LEARNED and loaded.dataset == "mnist"
    resumed = io.load_for_resume(path, dataclasses.replace(LEARNED, steps=5), "mnist")
    np.testing.assert_array_equal(resumed.loss_history, [2.3, 0.9, 0.7])
    assert resumed.l2reg == pytest.approx(0.004)
    with pytest.raises(ValueError, match="from mnist, not fashion_mnist"):
        io.load_for_resume(path, LEARNED, "fashion_mnist")


@pytest.mark.parametrize("text", ["{'dataset': 'mnist', 'steps'", "[1, 2]", "null",
                                  '{"dataset": "mnist", "distill": {"colour": 1}}'])
def test_an_unreadable_configuration_is_refused_naming_the_file(tmp_path, text):
    path = _old_file(tmp_path / "set.npz", config_text=text)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}.*configuration"):
        io.load_distilled(path)


# --- resuming ----------------------------------------------------------------------

def _saved_run(tmp_path, config=LEARNED, dataset="mnist", l2reg=0.004, soft=False):
    images, labels, _ = _valid(config.images_per_class)
    if soft:
        labels = np.full((len(labels), 10), 0.02, np.float32) + 0.8 * np.eye(10)[labels]
    return io.save_distilled(tmp_path / "run.npz", images, labels, l2reg,
                             loss_history=[2.3, 0.9], config=config, dataset=dataset)


@pytest.mark.parametrize("change", [{"steps": 7}, {"seed": 3}, {"steps": 1, "seed": 9},
                                    {"implicit_diff": "jax"}])
def test_resume_accepts_another_number_of_steps_seed_and_backend(tmp_path, change):
    path = _saved_run(tmp_path)
    saved = io.load_for_resume(path, dataclasses.replace(LEARNED, **change), "mnist")
    assert saved.config == LEARNED and saved.dataset == "mnist"
    assert set(io.RESUMABLE_CHANGES) == {"steps", "seed", "implicit_diff"}


FIXED = PRESETS["fixed-l2reg"]


@pytest.mark.parametrize("saved, resumed, dataset, message", [
    (dict(), LEARNED, "fashion_mnist", "mnist, not fashion_mnist"),
    (dict(), dataclasses.replace(LEARNED, inner_tol=1e-5), "mnist",
     r"inner_tol 1e-06 \(this run: 1e-05\)"),
    (dict(), dataclasses.replace(LEARNED, learn_labels=True), "mnist",
     r"learn_labels False \(this run: True\)"),
    (dict(), dataclasses.replace(LEARNED, images_per_class=2), "mnist",
     r"\(10, 784\).*images-per-class 2.*\(20, 784\)"),
    (dict(soft=True, config=dataclasses.replace(LEARNED, learn_labels=True)), LEARNED, "mnist",
     "soft labels.*--learn-labels"),
    (dict(config=FIXED, l2reg=0.1), dataclasses.replace(FIXED, l2reg=0.5), "mnist",
     r"l2reg 0\.1.*0\.5"),
    (dict(config=FIXED, l2reg=0.05), FIXED, "mnist", r"l2reg 0\.05.*0\.1"),
], ids=["dataset", "setting", "learned-quantity", "shape", "soft-labels", "l2reg-setting",
        "l2reg-value"])
def test_resume_refuses_a_mismatch_naming_it(tmp_path, saved, resumed, dataset, message):
    path = _saved_run(tmp_path, **saved)
    with pytest.raises(ValueError, match=message):
        io.load_for_resume(path, resumed, dataset)


def test_resume_needs_the_loss_history_and_configuration_the_command_line_writes(tmp_path):
    images, labels, l2reg = _valid()
    bare = io.save_distilled(tmp_path / "bare.npz", images, labels, l2reg)
    with pytest.raises(ValueError, match="no loss history or configuration"):
        io.load_for_resume(bare, FIXED, "mnist")
    non_finite = io.save_distilled(tmp_path / "nan.npz", images, labels, l2reg,
                                   loss_history=[2.3, np.nan], config=FIXED, dataset="mnist")
    with pytest.raises(ValueError, match="loss history.*NaN"):
        io.load_for_resume(non_finite, FIXED, "mnist")
    with pytest.raises(FileNotFoundError):
        io.load_for_resume(tmp_path / "missing.npz", FIXED, "mnist")

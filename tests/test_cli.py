import contextlib
import re
import subprocess
import sys

import numpy as np
import pytest

from distill import cli, data, distillation, evaluate, io, model
from tests.conftest import make_toy_dataset, requires_mnist


def test_preset_refuses_conflicting_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--preset", "seed", "--images-per-class", "10"])
    assert exit_info.value.code == 2
    assert "--preset seed fixes its own configuration; drop --images-per-class 10" in capsys.readouterr().err


def test_preset_accepts_options_equal_to_its_own():
    args = cli.build_parser().parse_args(["--preset", "seed", "--dataset", "mnist", "--steps", "50"])
    assert cli.config_from_args(args).steps == 50


def test_unknown_dataset_is_refused(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--dataset", "cifar10"])
    assert "invalid choice: 'cifar10'" in capsys.readouterr().err


def test_the_default_learns_l2reg_and_presets_take_options():
    parse = cli.build_parser().parse_args
    assert cli.config_from_args(parse([])) == distillation.CLI_DEFAULT
    assert distillation.CLI_DEFAULT.learn_l2reg and not distillation.CLI_DEFAULT.learn_labels
    fixed = cli.config_from_args(parse(["--no-learn-l2reg", "--steps", "7"]))
    assert not fixed.learn_l2reg and fixed.steps == 7
    # Presets other than "seed" take options on top.
    assert cli.config_from_args(parse(["--preset", "fixed-l2reg"])) == distillation.DistillConfig()
    assert cli.config_from_args(parse(["--preset", "fixed-l2reg", "--images-per-class", "3"])) \
        == distillation.DistillConfig(images_per_class=3)


@pytest.mark.parametrize("options, learned", [([], True), (["--no-learn-l2reg"], False)])
def test_writes_a_distilled_set_and_reports(monkeypatch, tmp_path, capsys, options, learned):
    toy = make_toy_dataset(num_features=784, per_class=20)
    monkeypatch.setattr(data, "load_dataset", lambda name, data_dir=None: toy)
    out = tmp_path / "runs" / "toy.npz"
    assert cli.main(["--images-per-class", "2", "--steps", "3", "--seed", "1", *options,
                     "--out", str(out), "--no-progress", "--no-compile-cache"]) == 0
    printed = capsys.readouterr().out
    assert "distilled 20 images in" in printed and "test accuracy" in printed
    assert ("learned along with the images: l2reg" in printed) == learned
    distilled = io.load_distilled(out)
    assert distilled.images.shape == (20, 784)
    np.testing.assert_array_equal(distilled.labels, np.repeat(np.arange(10), 2))
    # The stored l2reg is the one the images were distilled for: learned or 0.1.
    assert (distilled.l2reg != pytest.approx(0.1)) == learned
    steps = int(re.search(r"in (\d+) outer steps", printed).group(1))
    assert 1 <= steps <= 3  # a learned l2reg can stop early: the toy data are separable
    with np.load(out) as arrays:
        assert len(arrays["loss_history"]) == steps + 1


def _fake_data(monkeypatch):
    toy = make_toy_dataset(num_features=784, per_class=20)
    monkeypatch.setattr(data, "load_dataset", lambda name, data_dir=None: toy)
    return toy


def test_a_resumed_run_continues_the_saved_one(monkeypatch, tmp_path, capsys):
    _fake_data(monkeypatch)
    out = tmp_path / "run.npz"
    # l2reg fixed: learned, it stops within two steps on the separable toy data.
    options = ["--images-per-class", "2", "--no-learn-l2reg", "--no-progress",
               "--no-compile-cache"]
    assert cli.main([*options, "--steps", "3", "--out", str(out)]) == 0
    with np.load(out) as arrays:
        first_history = arrays["loss_history"]
    first = io.load_distilled(out)
    assert cli.main([*options, "--steps", "2", "--resume", str(out), "--out", str(out)]) == 0
    assert f"resuming from {out}: outer loss {first_history[-1]:.4f} after 3 steps" in \
        capsys.readouterr().out
    with np.load(out) as arrays:
        history = arrays["loss_history"]
    assert len(history) == 6
    np.testing.assert_array_equal(history[:3], first_history[:3])
    # Step 3 is where the second run starts: its loss is computed again there.
    np.testing.assert_allclose(history[3], first_history[3], rtol=1e-3)
    assert history[-1] < history[3]
    assert not np.allclose(io.load_distilled(out).images, first.images)


@pytest.mark.parametrize("options, message", [
    (["--images-per-class", "1"], r"needs \(10, 784\)"),
    (["--images-per-class", "2", "--preset", "seed"], "fixes its own configuration"),
])
def test_resume_refuses_a_set_of_another_configuration(monkeypatch, tmp_path, capsys, options,
                                                       message):
    _fake_data(monkeypatch)
    out = tmp_path / "run.npz"
    assert cli.main(["--images-per-class", "2", "--steps", "2", "--no-progress",
                     "--no-compile-cache", "--out", str(out)]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) if "--preset" in options else contextlib.nullcontext():
        code = cli.main([*options, "--resume", str(out), "--no-progress", "--no-compile-cache",
                         "--out", str(tmp_path / "other.npz")])
        assert code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "other.npz").exists()


def test_learned_l2reg_and_labels_are_saved_and_resumed(monkeypatch, tmp_path, capsys):
    _fake_data(monkeypatch)
    out = tmp_path / "learned.npz"
    options = ["--learn-l2reg", "--learn-labels", "--no-progress", "--no-compile-cache"]
    assert cli.main([*options, "--steps", "3", "--out", str(out)]) == 0
    assert "learned along with the images: l2reg" in capsys.readouterr().out
    first = io.load_distilled(out)
    assert first.labels.shape == (10, 10) and first.l2reg != pytest.approx(0.1)
    np.testing.assert_array_equal(first.labels.argmax(axis=1), np.arange(10))
    # Resuming needs the same things learned: the saved labels are soft.
    assert cli.main(["--no-progress", "--no-compile-cache", "--resume", str(out),
                     "--out", str(tmp_path / "other.npz")]) == 2
    assert "resume it with --learn-labels" in capsys.readouterr().err
    assert cli.main([*options, "--steps", "2", "--resume", str(out), "--out", str(out)]) == 0
    with np.load(out) as arrays:
        assert len(arrays["loss_history"]) == 6


def test_resume_refuses_a_missing_file(monkeypatch, tmp_path, capsys):
    _fake_data(monkeypatch)
    assert cli.main(["--resume", str(tmp_path / "nothing.npz"), "--no-progress",
                     "--no-compile-cache", "--out", str(tmp_path / "out.npz")]) == 2
    assert "cannot resume from" in capsys.readouterr().err


def test_an_interrupted_run_leaves_its_last_step_on_disk(monkeypatch, tmp_path, capsys):
    _fake_data(monkeypatch)
    real_distill = distillation.distill

    def interrupted_at_step_4(*args, **kwargs):
        def interrupt(step, images, inner_params):
            if step == 4:
                raise KeyboardInterrupt  # as Ctrl-C would, while step 4 is being recorded

        return real_distill(*args, callback=interrupt, **kwargs)

    monkeypatch.setattr(distillation, "distill", interrupted_at_step_4)
    out = tmp_path / "run.npz"
    assert cli.main(["--steps", "50", "--save-every", "3", "--no-learn-l2reg", "--no-progress",
                     "--no-compile-cache", "--out", str(out)]) == 130
    assert f"--resume {out}" in capsys.readouterr().err
    with np.load(out) as arrays:
        assert len(arrays["loss_history"]) == 4  # the start and three completed steps


@requires_mnist
def test_seed_preset_reproduces_the_original_notebook(tmp_path):
    """The acceptance check: about the original's 88% test accuracy."""
    out = tmp_path / "seed.npz"
    completed = subprocess.run(
        [sys.executable, "-m", "distill", "--preset", "seed", "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "inner solves that stopped at maxiter: 0" in completed.stdout
    distilled = io.load_distilled(out)
    assert distilled.images.shape == (10, 784)
    np.testing.assert_array_equal(distilled.labels, np.arange(10))

    accuracy = _independent_test_accuracy(distilled, data.load_dataset("mnist"))
    assert 0.87 <= accuracy <= 0.89, accuracy


def _independent_test_accuracy(distilled, mnist) -> float:
    """Train on the file's arrays with independent code: plain NumPy/SciPy logistic regression.

    Mean cross-entropy + l2reg / 2 * ||W||^2, no intercept, with the l2reg stored in the file.
    """
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    X, y, l2reg = distilled.images.astype(np.float64), distilled.labels, distilled.l2reg

    def objective(w):
        W = w.reshape(784, 10)
        log_probs = log_softmax(X @ W, axis=1)
        probs = np.exp(log_probs)
        probs[np.arange(len(y)), y] -= 1
        loss = -log_probs[np.arange(len(y)), y].mean() + 0.5 * l2reg * np.sum(W**2)
        return loss, (X.T @ probs / len(y) + l2reg * W).ravel()

    fit = minimize(objective, np.zeros(7840), jac=True, method="L-BFGS-B",
                   options={"gtol": 1e-8, "maxiter": 20000})
    predictions = (mnist.test.images @ fit.x.reshape(784, 10)).argmax(axis=1)
    return float(np.mean(predictions == mnist.test.labels))


@requires_mnist
def test_the_default_lifts_one_image_per_class_above_92_percent(tmp_path):
    """Issue 5's target: the command line's defaults, checked with independent code."""
    out = tmp_path / "learned.npz"
    completed = subprocess.run(
        [sys.executable, "-m", "distill", "--dataset", "mnist", "--images-per-class", "1",
         "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "inner solves that stopped at maxiter: 0" in completed.stdout
    distilled = io.load_distilled(out)
    assert distilled.l2reg < 0.01  # learned far below the original 0.1
    accuracy = _independent_test_accuracy(distilled, data.load_dataset("mnist"))
    assert accuracy >= 0.92, accuracy


@requires_mnist
def test_the_default_on_fashion_mnist_comes_within_one_and_a_half_points_of_all_data(tmp_path):
    out = tmp_path / "fashion.npz"
    completed = subprocess.run(
        [sys.executable, "-m", "distill", "--dataset", "fashion_mnist", "--images-per-class",
         "1", "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "inner solves that stopped at maxiter: 0" in completed.stdout
    fashion = data.load_dataset("fashion_mnist")
    accuracy = _independent_test_accuracy(io.load_distilled(out), fashion)
    all_data = model.accuracy(evaluate.all_data_model(fashion.train),
                              fashion.test.images, fashion.test.labels)
    assert accuracy >= all_data - 0.015, (accuracy, all_data)

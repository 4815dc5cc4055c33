import subprocess
import sys

import numpy as np
import pytest

from distill import cli, data, io
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


def test_writes_a_distilled_set_and_reports(monkeypatch, tmp_path, capsys):
    toy = make_toy_dataset(num_features=784, per_class=20)
    monkeypatch.setattr(data, "load_dataset", lambda name, data_dir=None: toy)
    out = tmp_path / "runs" / "toy.npz"
    assert cli.main(["--images-per-class", "2", "--steps", "3", "--seed", "1",
                     "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "distilled 20 images in" in printed and "test accuracy" in printed
    distilled = io.load_distilled(out)
    assert distilled.images.shape == (20, 784)
    np.testing.assert_array_equal(distilled.labels, np.repeat(np.arange(10), 2))
    assert distilled.l2reg == pytest.approx(0.1)
    with np.load(out) as arrays:
        assert len(arrays["loss_history"]) == 4


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

    # Check the file with independent code: plain NumPy/SciPy logistic regression.
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    mnist = data.load_dataset("mnist")
    X, y, l2reg = distilled.images.astype(np.float64), distilled.labels, distilled.l2reg

    def objective(w):
        W = w.reshape(784, 10)
        log_probs = log_softmax(X @ W, axis=1)
        probs = np.exp(log_probs)
        probs[np.arange(len(y)), y] -= 1
        loss = -log_probs[np.arange(len(y)), y].mean() + 0.5 * l2reg * np.sum(W**2)
        return loss, (X.T @ probs / len(y) + l2reg * W).ravel()

    fit = minimize(objective, np.zeros(7840), jac=True, method="L-BFGS-B", options={"gtol": 1e-8})
    predictions = (mnist.test.images @ fit.x.reshape(784, 10)).argmax(axis=1)
    accuracy = float(np.mean(predictions == mnist.test.labels))
    assert 0.87 <= accuracy <= 0.89, accuracy

"""Bad input, non-convergence and faults: each gives a clear error, nothing is silently wrong."""

import dataclasses
import os
import re
import signal
import subprocess
import sys
import warnings

import numpy as np
import pytest

from distill import cli, data, distillation, io, model
from tests.conftest import make_toy_dataset, requires_mnist

TOY = make_toy_dataset()
X, Y = TOY.train.images, TOY.train.labels


# --- distill(): bad input ----------------------------------------------------

@pytest.mark.parametrize("change, message", [
    (lambda: dict(train_images=X[0]), r"train_images must be a 2-D array \(n, pixels\), got shape \(20,\)"),
    (lambda: dict(train_images=(X * 255).astype(np.uint8)),
     r"train_images must be floating point \(divide uint8 pixels by 255\), got dtype uint8"),
    (lambda: dict(train_images=np.where(np.arange(20) == 3, np.inf, X)),
     r"train_images contain NaN or infinite values \(400 of 8000\)"),
    (lambda: dict(train_images=X[:0], train_labels=Y[:0]), r"train_images is empty, got shape \(0, 20\)"),
    (lambda: dict(train_labels=Y[:-1]), "400 train_images but 399 train_labels"),
    (lambda: dict(train_labels=np.where(Y == 9, 10, Y)),
     r"train_labels must lie in 0..9, got values 0..10 \(outside: 10\)"),
    (lambda: dict(train_labels=Y - 1), r"train_labels must lie in 0..9, got values -1..8"),
    (lambda: dict(train_labels=Y.astype(np.float32)), "integer train_labels expected, got dtype float32"),
    (lambda: dict(train_labels=np.eye(10, dtype=np.float32)[Y]), r"train_labels must have shape \(n,\)"),
    (lambda: dict(train_labels=np.where(Y == 7, 6, Y)), r"no example of class\(es\) 7"),
    (lambda: dict(num_classes=1), "num_classes must be at least 2"),
    (lambda: dict(init_images=np.full((10, 20), np.nan, np.float32)), "init_images contain NaN"),
    (lambda: dict(init_images=np.zeros((10, 21), np.float32)), r"init_images must have shape \(10, 20\)"),
    (lambda: dict(init_l2reg=-1.0, config=dataclasses.replace(distillation.CLI_DEFAULT, steps=1)),
     "init_l2reg must be a positive finite number, got -1.0"),
    (lambda: dict(init_l2reg=0.5), "init_l2reg=0.5 differs from config.l2reg=0.1, which this run keeps fixed"),
    (lambda: dict(init_labels=np.full((10, 10), 0.1, np.float32)), "set learn_labels=True"),
    (lambda: dict(init_labels=np.full((10, 10), 0.5, np.float32),
                  config=distillation.DistillConfig(learn_labels=True)),
     "soft init_labels must be probabilities: non-negative rows that sum to 1"),
    (lambda: dict(checkpoint_every=0), "checkpoint_every must be a positive integer, got 0"),
])
def test_distill_refuses_bad_input_naming_the_argument(change, message):
    arguments = dict(train_images=X, train_labels=Y, progress=False)
    arguments.update(change())
    with pytest.raises(ValueError, match=message):
        distillation.distill(**arguments)


@pytest.mark.parametrize("field, value, message", [
    ("dataset", "cifar10", r"unknown dataset 'cifar10': expected one of \['fashion_mnist', 'mnist'\]"),
    ("l2reg", float("nan"), "l2reg must be a positive finite number, got nan"),
    ("l2reg", -0.1, "l2reg must be a positive finite number, got -0.1"),
    ("images_per_class", 0, "images_per_class must be a positive integer, got 0"),
])
def test_config_refuses_bad_values_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        distillation.DistillConfig(**{field: value})


@pytest.mark.parametrize("arguments, message", [
    ((X[:, :0], Y, 0.1), r"images is empty, got shape \(400, 0\)"),
    (((X * 255).astype(np.uint8), Y, 0.1), "divide uint8 pixels by 255"),
    ((X, Y, 0.0), "l2reg must be a positive finite number, got 0.0"),
    ((X, Y, "0.1"), "l2reg must be a positive finite number, got '0.1'"),
    ((X, Y, np.array([0.1, 0.2])), r"l2reg must be a single number, got shape \(2,\)"),
    ((X, Y[:10], 0.1), "400 images but 10 labels"),
    ((X, np.full((400, 10), 0.2, np.float32), 0.1), "soft labels must be probabilities"),
])
def test_the_evaluation_fit_refuses_bad_input(arguments, message):
    with pytest.raises(ValueError, match=message):
        model.fit_logistic_regression(*arguments)


def test_figures_refuse_images_that_are_not_28_by_28_and_labels_that_do_not_match():
    from distill import plotting

    with pytest.raises(ValueError, match="images must have 784 pixels per image, got shape"):
        plotting.plot_distilled_images(X)  # 20 pixels each
    images = np.zeros((3, 784), np.float32)
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        plotting.plot_real_images(images, [0, 1])
    with pytest.raises(ValueError, match=r"labels must lie in 0..1"):
        plotting.plot_real_images(images, [0, 1, 2], class_names=["a", "b"])


# --- distill(): non-convergence and non-finite losses ------------------------

def test_a_nan_outer_loss_stops_the_run_and_the_checkpoint_keeps_the_last_finite_step():
    # A step of length 1e30 sends the images to where the inner problem overflows.
    config = distillation.DistillConfig(outer_optimizer="adam", learning_rate=1e30, steps=5)
    saved = []
    with pytest.raises(FloatingPointError,
                       match=r"outer loss became nan at step 1 \(the last finite loss, 2.299, "
                             r"was at step 0\)"):
        distillation.distill(X, Y, config, progress=False, checkpoint_every=1,
                             checkpoint=lambda *arguments: saved.append(arguments))
    (images, labels, l2reg, history), = saved
    initial, _ = distillation.initial_distilled_set(config, 10, 20)
    np.testing.assert_array_equal(images, np.asarray(initial))  # step 0, the last finite one
    assert len(history) == 1 and np.isfinite(history[0])


def _lbfgs_first_step(loss):
    """One step of the outer L-BFGS engine on ``loss(v)`` from v = (1, 1, 1)."""
    import jax
    import jax.numpy as jnp

    engine = distillation._lbfgs_engine(
        lambda variables, inner, X, y: (loss(variables["v"]), (inner, jnp.float32(0))))
    run = lambda fun, *arguments: jax.jit(fun)(*arguments)  # noqa: E731
    start = {"v": jnp.ones(3)}
    placeholders = (jnp.zeros(1), jnp.zeros(1), jnp.zeros(1))
    state = engine.start(run, start, *placeholders)
    return engine.step(run, start, state, *placeholders)


def test_the_line_search_steps_back_from_nan_and_raises_when_all_is_nan():
    import jax.numpy as jnp

    # Without NaN the first step lands at v = 0.42 (loss 0.536). With NaN
    # wherever sum(v) < 1.5, that trial is rejected and half the step taken.
    _, clean = _lbfgs_first_step(lambda v: jnp.sum(v ** 2))
    assert float(clean.value) == pytest.approx(3 * 0.42265 ** 2, rel=1e-4)
    variables, state = _lbfgs_first_step(
        lambda v: jnp.where(jnp.sum(v) < 1.5, jnp.nan, jnp.sum(v ** 2)))
    assert not state.failed
    np.testing.assert_allclose(variables["v"], 1 - (1 - 0.42265) / 2, rtol=1e-4)
    # NaN everywhere but the start: no trial point is finite.
    with pytest.raises(FloatingPointError, match="NaN or infinite at every trial point"):
        _lbfgs_first_step(lambda v: jnp.where(jnp.all(v == 1), jnp.sum(v ** 2), jnp.nan))
    # A finite loss whose gradient is NaN (the untaken branch of where()).
    with pytest.raises(FloatingPointError, match="the hypergradient became nan"):
        _lbfgs_first_step(lambda v: jnp.sum(v ** 2) + jnp.where(True, 0.0, jnp.sqrt(-jnp.sum(v))))


def test_unconverged_inner_solves_warn_with_the_error_reached_and_are_counted():
    config = distillation.DistillConfig(steps=3, inner_maxiter=2, warm_start=False)
    with pytest.warns(RuntimeWarning) as caught:
        result = distillation.distill(X, Y, config, progress=False)
    message = str(caught[0].message)
    largest = max(result.inner_errors)
    assert f"stopped at maxiter=2 before reaching tol=1e-06 at {result.inner_not_converged} of " \
           f"{len(result.inner_errors)} iterates (largest error reached {largest:.3g})" in message
    assert "not those of the true inner solution" in message
    assert result.inner_not_converged == len(result.inner_errors) == result.steps + 1


def test_a_failed_line_search_stops_the_run_and_says_so():
    # One inner iteration from ones: the "hypergradient" is not that of the
    # true inner solution, soon points nowhere downhill, and the run warns.
    config = distillation.DistillConfig(steps=40, inner_maxiter=1, warm_start=False)
    with pytest.warns(RuntimeWarning, match="stopped at maxiter=1"):
        result = distillation.distill(X, Y, config, progress=False)
    assert result.stop_reason == "line_search_failed" and result.steps < 40
    assert len(result.loss_history) == result.steps + 1  # the failed step is not recorded
    assert result.loss_history[-1] < result.loss_history[0]


def test_stop_reasons_of_converged_and_exhausted_runs():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean run warns about nothing
        converged = distillation.distill(X, Y, distillation.DistillConfig(steps=300),
                                         progress=False)
        exhausted = distillation.distill(X, Y, distillation.DistillConfig(steps=2), progress=False)
    assert converged.stop_reason == "converged" and converged.steps < 300
    assert exhausted.stop_reason == "max_steps" and exhausted.steps == 2


# --- determinism ---------------------------------------------------------------

@pytest.mark.parametrize("config", [distillation.DistillConfig(steps=5),
                                    dataclasses.replace(distillation.CLI_DEFAULT, steps=5,
                                                        learn_labels=True)],
                         ids=["fixed-l2reg", "learned"])
@pytest.mark.filterwarnings("ignore:the inner solver stopped at maxiter")
def test_the_same_seed_gives_the_same_set_bit_for_bit(config):
    first = distillation.distill(X, Y, config, progress=False)
    second = distillation.distill(X, Y, config, progress=False)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert first.l2reg == second.l2reg and first.loss_history == second.loss_history
    other = distillation.distill(X, Y, dataclasses.replace(config, seed=1), progress=False)
    assert not np.array_equal(first.images, other.images)


# --- files ---------------------------------------------------------------------

def _a_set(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(10, 784)).astype(np.float32), np.arange(10), 0.1


def test_a_crash_during_a_write_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = io.save_distilled(tmp_path / "set.npz", *_a_set(0))
    before = path.read_bytes()

    def crash_half_way(handle, **arrays):
        handle.write(b"PK\x03\x04 half a zip file")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", crash_half_way)
    with pytest.raises(OSError, match="No space left"):
        io.save_distilled(path, *_a_set(1))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["set.npz"]  # the partial temporary file is gone


def test_saving_to_a_folder_is_refused(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder: give the file to write"):
        io.save_distilled(tmp_path, *_a_set())


def test_a_truncated_or_foreign_file_is_refused_by_name(tmp_path):
    path = io.save_distilled(tmp_path / "set.npz", *_a_set())
    for size in (0, 30, len(path.read_bytes()) // 2):
        truncated = tmp_path / f"cut{size}.npz"
        truncated.write_bytes(path.read_bytes()[:size])
        with pytest.raises(ValueError, match=rf"{re.escape(str(truncated))} is not a readable .npz"):
            io.load_distilled(truncated)


# --- the command line ----------------------------------------------------------

FAST = ["--no-progress", "--no-compile-cache", "--no-learn-l2reg"]


@pytest.fixture
def toy_data(monkeypatch):
    toy = make_toy_dataset(num_features=784, per_class=20)
    monkeypatch.setattr(data, "load_dataset", lambda name, data_dir=None: toy)
    return toy


def _exit_code(capsys, argv):
    """``cli.main(argv)``'s exit status (argparse's included) and what it wrote to stderr."""
    try:
        code = cli.main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    return code, capsys.readouterr().err


def test_an_existing_output_is_replaced_only_with_overwrite(toy_data, tmp_path, capsys):
    out = tmp_path / "set.npz"
    out.write_bytes(b"precious")
    code, err = _exit_code(capsys, [*FAST, "--steps", "1", "--out", str(out)])
    assert code == 2 and f"--out {out} exists: pass --overwrite to replace it" in err
    assert out.read_bytes() == b"precious"
    assert cli.main([*FAST, "--steps", "1", "--out", str(out), "--overwrite"]) == 0
    assert io.load_distilled(out).images.shape == (10, 784)
    # Resuming a run into its own file continues it: no --overwrite needed.
    assert cli.main([*FAST, "--steps", "1", "--resume", str(out), "--out", str(out)]) == 0


def test_output_folders_are_created_and_a_folder_is_not_a_file(toy_data, tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "set.npz"
    assert cli.main([*FAST, "--steps", "1", "--out", str(out)]) == 0
    assert out.is_file()
    code, err = _exit_code(capsys, [*FAST, "--out", str(tmp_path / "new")])
    assert code == 2 and "is a folder: give a file name" in err


@pytest.mark.parametrize("options, message", [
    (["--images", "15"], "--images 15: 15 images cannot be split evenly among 10 classes: use a "
                         r"multiple of 10 \(e.g. 10 or 20\)"),
    (["--images", "0"], "--images 0: the number of images must be a positive integer, got 0"),
    (["--images", "20", "--images-per-class", "2"], "not allowed with argument"),
    (["--images", "20", "--preset", "seed"], "--preset seed fixes its own configuration; drop "
                                             "--images 20"),
    (["--images-per-class", "0"], "--images-per-class must be a positive integer, got 0"),
    (["--steps", "-3"], "--steps must be a positive integer, got -3"),
    (["--save-every", "0"], "--save-every must be a positive integer, got 0"),
    (["--dataset", "cifar10"], "invalid choice: 'cifar10'"),
])
def test_bad_options_are_refused_naming_the_option(toy_data, tmp_path, capsys, options, message):
    code, err = _exit_code(capsys, [*FAST, *options, "--out", str(tmp_path / "x.npz")])
    assert code == 2 and re.search(message, err)
    assert not (tmp_path / "x.npz").exists()


def test_images_in_all_are_shared_among_the_classes(toy_data, tmp_path):
    assert cli.main([*FAST, "--images", "20", "--steps", "1", "--out", str(tmp_path / "s.npz")]) == 0
    np.testing.assert_array_equal(io.load_distilled(tmp_path / "s.npz").labels,
                                  np.repeat(np.arange(10), 2))


def _a_run(tmp_path, *options):
    out = tmp_path / "run.npz"
    assert cli.main([*FAST, "--steps", "2", "--out", str(out), *options]) == 0
    return out


def _rewrite(path, **changes):
    with np.load(path) as arrays:
        contents = {name: arrays[name] for name in arrays.files}
    contents.update(changes)
    np.savez(path, **contents)


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.unlink(), "no such file"),
    (lambda p: p.write_bytes(b"not a zip file at all"), "is not a readable .npz file"),
    (lambda p: p.write_bytes(p.read_bytes()[:400]), "is not a readable .npz file"),
    (lambda p: _rewrite(p, images=np.full((10, 784), np.nan, np.float32)),
     "images contain NaN or infinite values"),
    (lambda p: _rewrite(p, loss_history=np.array([2.3, np.inf, 0.6])),
     "its loss history holds NaN or infinite values"),
    (lambda p: _rewrite(p, labels=np.arange(10) + 1), r"labels must lie in 0..9"),
    (lambda p: _rewrite(p, l2reg=np.float32(0)), "l2reg must be a positive finite number, got 0.0"),
    (lambda p: _rewrite(p, config=np.array("{'dataset': 'mnist', 'steps'")),
     "its stored configuration is unreadable"),
    (lambda p: _rewrite(p, config=np.array(cli.describe(dataclasses.replace(
        distillation.CLI_DEFAULT, learn_l2reg=False, inner_solver="gradient_descent")))),
     "it was distilled with other settings: inner_solver 'gradient_descent' "
     r"\(this run: 'lbfgs'\)"),
    (lambda p: _rewrite(p, config=np.array(cli.describe(dataclasses.replace(
        distillation.CLI_DEFAULT, dataset="fashion_mnist", learn_l2reg=False)))),
     "it was distilled from fashion_mnist, not mnist"),
    (lambda p: io.save_distilled(p, *_a_set()), "it has no loss history or configuration"),
])
def test_resume_refuses_a_missing_damaged_or_mismatched_set(toy_data, tmp_path, capsys, damage,
                                                            message, monkeypatch):
    out = _a_run(tmp_path)
    damage(out)
    # Refused before any work: the data are not even loaded.
    monkeypatch.setattr(data, "load_dataset", lambda *arguments, **options: pytest.fail(
        "the data were loaded before --resume was checked"))
    code, err = _exit_code(capsys, [*FAST, "--resume", str(out), "--out", str(tmp_path / "next.npz")])
    assert code == 2 and err.startswith(f"error: cannot resume from {out}: ")
    assert re.search(message, err), err
    assert not (tmp_path / "next.npz").exists()


def test_resume_may_change_steps_and_seed_but_not_the_solver(toy_data, tmp_path, capsys):
    out = _a_run(tmp_path)
    assert cli.main([*FAST, "--steps", "1", "--seed", "3", "--resume", str(out), "--out",
                     str(tmp_path / "more.npz")]) == 0
    code, err = _exit_code(capsys, ["--no-progress", "--no-compile-cache", "--preset",
                                    "fixed-l2reg", "--resume", str(out), "--out",
                                    str(tmp_path / "other.npz")])
    assert code == 2 and "it was distilled with other settings: inner_maxiter 10000 (this run: 2000); " \
                         "inner_solver 'lbfgs' (this run: 'gradient_descent')" in err


def test_a_nan_outer_loss_exits_non_zero_keeping_the_last_finite_set(toy_data, tmp_path, capsys,
                                                                     monkeypatch):
    # Fault injection: the reported outer loss reads NaN from step 4 on (what
    # the gradient-descent and Adam engines can report; the L-BFGS engine
    # raises instead, tested above, and the command line treats both alike).
    real_engine = distillation._engine

    def poisoned_engine(*arguments):
        engine = real_engine(*arguments)
        reports = []

        def report(state):
            loss, inner_params, inner_error = engine.report(state)
            reports.append(loss)
            return (np.nan if len(reports) > 4 else loss), inner_params, inner_error

        return engine._replace(report=report)

    monkeypatch.setattr(distillation, "_engine", poisoned_engine)
    out = tmp_path / "run.npz"
    code = cli.main([*FAST, "--steps", "10", "--save-every", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == cli.EXIT_NON_FINITE == 1
    assert "error: the outer loss became nan at step 4" in err
    assert f"the last step with a finite loss (3) is in {out}" in err
    with np.load(out) as arrays:
        history = arrays["loss_history"]
    assert len(history) == 4 and np.all(np.isfinite(history))
    io.load_distilled(out)  # a valid set, ready for --resume


# --- a killed run ----------------------------------------------------------------

def _history(path):
    with np.load(path) as arrays:
        return arrays["loss_history"]


# The command line, in a child process whose sixth save of the distilled set
# writes half of the file, says so, and hangs there: the test kills it then.
KILLED_MID_WRITE = """
import sys, time, io
import numpy as np
from distill import cli

real_savez, saves = np.savez, []

def savez_that_hangs(file, **arrays):
    if "loss_history" in arrays:
        saves.append(len(arrays["loss_history"]) - 1)
        if len(saves) == 6:
            buffer = io.BytesIO()
            real_savez(buffer, **arrays)
            file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            file.flush()
            print("half-written step", saves[-1], flush=True)
            time.sleep(600)
    return real_savez(file, **arrays)

np.savez = savez_that_hangs
sys.exit(cli.main(sys.argv[1:]))
"""


@requires_mnist
def test_a_run_killed_mid_write_leaves_its_last_complete_set_on_disk(tmp_path):
    """SIGKILL while the sixth step's file is half written: the fifth stays, bit for bit."""
    out = tmp_path / "killed.npz"
    options = ["--images-per-class", "1", "--no-progress", "--no-compile-cache",
               "--save-every", "1"]
    process = subprocess.Popen([sys.executable, "-c", KILLED_MID_WRITE, *options,
                                "--out", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in process.stdout:  # until the child reports the half-written file
            lines.append(line)
            if line.startswith("half-written step"):
                break
        assert lines and lines[-1] == "half-written step 6\n", "".join(lines)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL

    # The half-written temporary file is there, beside an intact file of step 5.
    leftover, = tmp_path.glob(".killed.npz.*.tmp")
    with pytest.raises(ValueError, match="is not a readable .npz"):
        io.load_distilled(leftover)
    killed = io.load_distilled(out)
    assert len(_history(out)) == 6 and np.all(np.isfinite(_history(out)))
    # The same command stopped after 5 steps writes the same file: the run is
    # deterministic, and the kill left step 5 complete, not a mixture.
    command = [sys.executable, "-m", "distill", *options]
    reference = tmp_path / "reference.npz"
    subprocess.run([*command, "--steps", "5", "--out", str(reference)], check=True,
                   capture_output=True)
    expected = io.load_distilled(reference)
    np.testing.assert_array_equal(killed.images, expected.images)
    assert killed.l2reg == expected.l2reg
    np.testing.assert_array_equal(_history(out), _history(reference))
    # And the run goes on from it.
    resumed = subprocess.run([*command, "--steps", "2", "--resume", str(out), "--out", str(out)],
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming from {out}: outer loss {_history(reference)[-1]:.4f} after 5 steps" \
        in resumed.stdout
    assert len(_history(out)) == 8


def test_ctrl_c_before_the_first_step_says_nothing_was_written(toy_data, tmp_path, capsys,
                                                              monkeypatch):
    real_distill = distillation.distill

    def interrupted_at_the_start(*arguments, **options):
        def interrupt(step, images, inner_params):
            raise KeyboardInterrupt

        return real_distill(*arguments, callback=interrupt, **options)

    monkeypatch.setattr(distillation, "distill", interrupted_at_the_start)
    out = tmp_path / "run.npz"
    code, err = _exit_code(capsys, [*FAST, "--out", str(out)])
    assert code == cli.EXIT_INTERRUPTED == 130
    assert f"stopped before the first step; nothing was written to {out}" in err
    assert not out.exists()


def test_float64_data_in_64_bit_mode_are_distilled_in_float32():
    import jax

    jax.config.update("jax_enable_x64", True)
    try:
        result = distillation.distill(X.astype(np.float64), Y, distillation.DistillConfig(steps=2),
                                      progress=False)
    finally:
        jax.config.update("jax_enable_x64", False)
    assert result.images.dtype == np.float32 and np.all(np.isfinite(result.images))

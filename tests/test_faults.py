"""Faults while a run goes on: a NaN or infinite loss, Ctrl-C, a crash or a kill mid-write.

Each stops the run cleanly, keeps the last complete step on disk, and says so.
(Bad input is refused where it is checked: see the test file of each module.)
"""

import os
import signal
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from distill import cli, distillation, io, outer
from distill.config import DistillConfig
from tests.conftest import SMALL_CACHE_COMMAND_LINE, SMALL_SPLITS_PRELUDE, make_toy_dataset

TOY = make_toy_dataset()
X, Y = TOY.train.images, TOY.train.labels


# --- a NaN or infinite outer loss ------------------------------------------------------

def test_a_nan_outer_loss_stops_the_run_and_the_checkpoint_keeps_the_last_finite_step():
    # A step of length 1e30 sends the images to where the inner problem overflows.
    config = DistillConfig(outer_optimizer="adam", learning_rate=1e30, steps=5)
    saved = []
    with pytest.raises(FloatingPointError, match=r"nan at step 1.*2\.299.*step 0"):
        distillation.distill(X, Y, config, progress=False, checkpoint_every=1,
                             checkpoint=lambda *arguments: saved.append(arguments))
    (images, labels, l2reg, history), = saved
    initial, _ = distillation.initial_distilled_set(config, 10, 20)
    np.testing.assert_array_equal(images, np.asarray(initial))  # step 0, the last finite one
    assert len(history) == 1 and np.isfinite(history[0])


def test_a_nan_outer_loss_exits_non_zero_keeping_the_last_finite_set(fake_mnist, run_cli,
                                                                     tmp_path, monkeypatch):
    # Fault injection: the outer loss an L-BFGS step reports reads NaN from
    # step 4 on (what a gradient-descent or Adam step reports when the run
    # diverges; the L-BFGS line search itself raises, see test_outer.py).
    real_step, steps = outer.Lbfgs.step, []

    def poisoned_step(self, *arguments):
        variables, state = real_step(self, *arguments)
        steps.append(None)
        return variables, (state._replace(value=jnp.float32(np.nan)) if len(steps) >= 4
                           else state)

    monkeypatch.setattr(outer.Lbfgs, "step", poisoned_step)
    out = tmp_path / "run.npz"
    status, _, err = run_cli("--no-learn-l2reg", "--steps", "10", "--save-every", "2",
                             "--out", out)
    assert status == cli.EXIT_NON_FINITE == 1
    assert "outer loss became nan at step 4" in err
    assert f"the last step with a finite loss (3) is in {out}" in err
    kept = io.load_distilled(out)  # a valid set, ready for --resume
    assert len(kept.loss_history) == 4 and np.all(np.isfinite(kept.loss_history))


# --- Ctrl-C ------------------------------------------------------------------------------

@pytest.mark.parametrize("at_step", [0, 4])
def test_ctrl_c_exits_130_keeping_the_last_completed_step(fake_mnist, run_cli, tmp_path,
                                                          monkeypatch, at_step):
    real_distill = distillation.distill

    def interrupted(*arguments, **options):
        def interrupt(step, images, inner_params):
            if step == at_step:
                raise KeyboardInterrupt  # as Ctrl-C would, while the step is being recorded

        return real_distill(*arguments, callback=interrupt, **options)

    monkeypatch.setattr(distillation, "distill", interrupted)
    out = tmp_path / "run.npz"
    status, _, err = run_cli("--no-learn-l2reg", "--steps", "50", "--save-every", "3",
                             "--out", out)
    assert status == cli.EXIT_INTERRUPTED == 130
    if at_step == 0:
        assert f"stopped before the first step was saved; nothing was written to {out}" in err
        assert not out.exists()
    else:
        assert f"the last complete step (3) is in {out}" in err and f"--resume {out}" in err
        assert len(io.load_distilled(out).loss_history) == 4  # the start and three steps


# --- a crash or a kill while writing --------------------------------------------------------

def _a_set(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(10, 784)).astype(np.float32), np.arange(10), 0.1


def test_a_crash_while_saving_leaves_the_previous_set_intact(tmp_path, monkeypatch):
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


# The command line, in a child process whose sixth save of the distilled set
# writes half of the file, says so, and hangs there: the test kills it then.
KILLED_MID_WRITE = SMALL_SPLITS_PRELUDE + """
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


def _history(path):
    return io.load_distilled(path).loss_history


def test_a_run_killed_mid_write_leaves_its_last_complete_set_on_disk(small_mnist_cache,
                                                                    tmp_path):
    """SIGKILL while the sixth step's file is half written: the fifth stays, bit for bit."""
    out = tmp_path / "killed.npz"
    # The compile cache on (in the small cache's folder): the later processes load the programs.
    options = ["--no-learn-l2reg", "--no-progress", "--save-every", "1"]
    process = subprocess.Popen([sys.executable, "-c", KILLED_MID_WRITE, *options,
                                "--out", str(out)], env=small_mnist_cache,
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
    with pytest.raises(ValueError, match="not a readable .npz"):
        io.load_distilled(leftover)
    killed = io.load_distilled(out)
    assert len(killed.loss_history) == 6 and np.all(np.isfinite(killed.loss_history))
    # The same command stopped after 5 steps writes the same file: the run is
    # deterministic across processes, and the kill left step 5 complete, not a mixture.
    command = [sys.executable, "-c", SMALL_CACHE_COMMAND_LINE, *options]  # python -m distill
    reference = tmp_path / "reference.npz"
    subprocess.run([*command, "--steps", "5", "--out", str(reference)], check=True,
                   capture_output=True, env=small_mnist_cache)
    expected = io.load_distilled(reference)
    np.testing.assert_array_equal(killed.images, expected.images)
    assert killed.l2reg == expected.l2reg
    np.testing.assert_array_equal(killed.loss_history, expected.loss_history)
    # And the run goes on from it.
    resumed = subprocess.run([*command, "--steps", "2", "--resume", str(out), "--out", str(out)],
                             capture_output=True, text=True, env=small_mnist_cache)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming from {out}: outer loss {expected.loss_history[-1]:.4f} after 5 steps" \
        in resumed.stdout
    assert len(_history(out)) == 8

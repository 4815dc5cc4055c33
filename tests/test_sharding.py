"""The real data split over devices (distill.sharding): one device, eight, two processes.

The multi-device runs happen in child processes (tests/sharded_run.py), since
the number of CPU devices is fixed when JAX starts. They compare with a run on
one device: equal to float32 rounding, and the padding of an example count
that the devices do not divide leaves no example out and counts none twice
(a padded example counted at weight one would move the loss by about 1%).
"""

import json
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from distill import model, sharding

CHILD = Path(__file__).with_name("sharded_run.py")


def run_child(*args, timeout=120):
    completed = subprocess.run([sys.executable, str(CHILD), *map(str, args)],
                               capture_output=True, text=True, timeout=timeout)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def assert_same_runs(runs, reference):
    for name in ("linear", "network"):
        np.testing.assert_allclose(runs[name]["loss_history"], reference[name]["loss_history"],
                                   rtol=1e-4, err_msg=name)
        np.testing.assert_allclose(runs[name]["images"], reference[name]["images"],
                                   rtol=1e-3, atol=5e-4, err_msg=name)
        np.testing.assert_allclose(runs[name]["l2reg"], reference[name]["l2reg"], rtol=1e-3,
                                   err_msg=name)


@pytest.fixture(scope="module")
def one_device():
    """The child's runs on one CPU device."""
    runs = run_child(1)
    assert runs["linear"]["split"] == {"devices": 1, "examples": 410, "per_device": 410,
                                       "padding": 0}
    return runs


def test_eight_devices_give_the_one_device_result(one_device):
    runs = run_child(8)
    assert (runs["devices"], runs["processes"]) == (8, 1)
    assert runs["linear"]["split"] == {"devices": 8, "examples": 410, "per_device": 52,
                                       "padding": 6}
    assert runs["network"]["split"] == {"devices": 8, "examples": 30, "per_device": 4,
                                        "padding": 2}
    assert_same_runs(runs, one_device)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def test_two_processes_give_the_single_process_result(one_device, tmp_path):
    port = free_port()
    # Output to files, not pipes: a process's exit waits for the other's, so a
    # child blocked on a full pipe would hold both.
    logs = [(tmp_path / f"out{rank}.txt", tmp_path / f"err{rank}.txt") for rank in range(2)]
    children = []
    for rank, (out, err) in enumerate(logs):
        with open(out, "w") as stdout, open(err, "w") as stderr:
            children.append(subprocess.Popen(
                [sys.executable, str(CHILD), "2", str(rank), "2", str(port)],
                stdout=stdout, stderr=stderr))
    outputs = []
    for child, (out, err) in zip(children, logs):
        child.wait(timeout=180)
        assert child.returncode == 0, err.read_text()[-3000:]
        outputs.append(json.loads(out.read_text().strip().splitlines()[-1]))
    for runs in outputs:
        assert (runs["devices"], runs["processes"]) == (4, 2)
        assert runs["linear"]["split"] == {"devices": 4, "examples": 410, "per_device": 103,
                                           "padding": 2}
        assert_same_runs(runs, one_device)
    assert outputs[0] == outputs[1]  # every process ends with the same set


def test_make_mesh_uses_every_device_by_default_and_names_a_bad_count():
    assert sharding.make_mesh().devices.tolist() == jax.devices()
    assert sharding.make_mesh(1).axis_names == (sharding.AXIS,)
    for bad in (0, -1, True, 1.0):
        with pytest.raises(ValueError, match=rf"devices must be a positive integer, got {bad!r}"):
            sharding.make_mesh(bad)
    with pytest.raises(ValueError, match=rf"devices={len(jax.devices()) + 1}, but JAX sees "
                                         rf"{len(jax.devices())}"):
        sharding.make_mesh(len(jax.devices()) + 1)


def test_shard_examples_pads_only_what_the_devices_do_not_divide():
    assert sharding.split_of(410, 8) == sharding.ExampleSplit(devices=8, examples=410, per_device=52,
                                                       padding=6)
    assert sharding.split_of(60_000, 8).padding == 0
    assert "6 padded" in sharding.split_of(410, 8).describe()
    with pytest.raises(ValueError, match="examples must be a positive integer, got 0"):
        sharding.split_of(0, 8)
    with pytest.raises(ValueError, match="devices must be a positive integer, got 0"):
        sharding.split_of(410, 0)
    images, labels = np.ones((5, 3), np.float32), np.arange(5)
    (sharded_images, sharded_labels), weights, split = sharding.shard_examples(
        sharding.make_mesh(1), images, labels)
    assert weights is None and split.padding == 0
    np.testing.assert_array_equal(sharded_images, images)
    np.testing.assert_array_equal(sharded_labels, labels)
    with pytest.raises(ValueError, match=r"same number of examples, got \[5, 4\]"):
        sharding.shard_examples(sharding.make_mesh(1), images, labels[:4])


@pytest.mark.parametrize("soft", [False, True])
def test_data_loss_gives_padded_examples_no_weight(soft):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((6, 3)).astype(np.float32)
    images = rng.standard_normal((7, 6)).astype(np.float32)
    labels = rng.integers(0, 3, 7)
    if soft:
        labels = rng.dirichlet(np.ones(3), 7).astype(np.float32)
    weights = np.array([1, 1, 1, 1, 1, 0, 0], np.float32)
    padded = model.data_loss(W, images, labels, weights)
    np.testing.assert_allclose(padded, model.data_loss(W, images[:5], labels[:5]), rtol=1e-6)
    np.testing.assert_allclose(model.data_loss(W, images, labels, np.ones(7, np.float32)),
                               model.data_loss(W, images, labels), rtol=1e-6)


def test_command_line_reports_its_devices_and_refuses_too_many(run_cli, fake_mnist, tmp_path):
    status, out, _ = run_cli("--preset", "fixed-l2reg", "--steps", "1",
                             "--out", tmp_path / "set.npz")
    assert status == 0
    assert ("devices: 1 (cpu, 1 process); the real training images split over them: "
            "1 device, 200 examples each") in out
    status, _, err = run_cli("--devices", "0", "--out", tmp_path / "other.npz")
    assert status == 2 and "--devices must be a positive integer, got 0" in err
    status, _, err = run_cli("--devices", "2", "--out", tmp_path / "other.npz")
    assert status == 2 and "--devices: devices=2, but JAX sees 1 (cpu)" in err
    assert not (tmp_path / "other.npz").exists()
    status, _, err = run_cli("--distributed", "--out", tmp_path / "other.npz")
    assert status == 2 and "--distributed: cannot join the other processes" in err

"""The benchmarks run, and what they print holds (the full runs are in benchmarks/README.md)."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import requires_mnist

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@requires_mnist
def test_implicit_memory_stays_flat_while_unrolled_grows(tmp_path):
    figures = tmp_path / "figures.json"
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "implicit_vs_unrolled.py"), "--iterations", "10", "100",
         "--json", str(figures)],
        capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "implicit: working memory" in completed.stdout
    results = json.loads(figures.read_text())["results"]
    memory = {(row["method"], row["iterations"]): row["temp_bytes"] for row in results}
    assert memory["implicit", 10] == memory["implicit", 100]
    assert memory["unrolled", 100] > 2 * memory["unrolled", 10]


@requires_mnist
def test_the_protocol_benchmark_reports_each_initialization_beside_the_published_score(tmp_path):
    figures = tmp_path / "figures.json"
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "convnet_protocol.py"), "--datasets", "mnist",
         "--sizes", "1", "--seeds", "2", "--epochs", "1", "--augment", "on",
         "--json", str(figures)],
        capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "64.9 +- 3.5" in completed.stdout  # DC's published random-real score
    (row,) = json.loads(figures.read_text())["results"]
    assert row["dataset"] == "mnist" and row["images_per_class"] == 1 and row["augment"]
    assert len(row["accuracies"]) == 2 and all(0 <= a <= 1 for a in row["accuracies"])
    assert row["protocol"]["epochs"] == 1 and row["peak_rss_bytes"] > 0


def _benchmark(name):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def _independent_protocol():
    return _benchmark("independent_protocol")


def test_the_independent_convnet_has_the_helpers_architecture():
    """The Keras ConvNet the targets are checked with, built without the helper, has
    the helper's layers: the same number of weights in each, in the same order."""
    import jax

    from distill import convnet

    keras_model = _independent_protocol().build_convnet()
    keras_sizes = sorted(int(weight.shape.num_elements()) for weight in keras_model.weights)
    helper_sizes = sorted(int(leaf.size) for leaf in jax.tree.leaves(
        convnet.init_convnet(jax.random.PRNGKey(0))))
    assert keras_sizes == helper_sizes
    assert keras_model.output_shape == (None, 10)


def test_the_independent_protocol_learns_separable_images(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    prototypes = rng.normal(size=(10, 28, 28, 1)).astype(np.float32)
    images = prototypes + 0.1 * rng.normal(size=prototypes.shape).astype(np.float32)
    test_labels = rng.integers(0, 10, 200)
    test_images = prototypes[test_labels] + 0.1 * rng.normal(
        size=(200, 28, 28, 1)).astype(np.float32)
    accuracy = _independent_protocol().train_and_test(
        images, np.eye(10, dtype=np.float32), test_images, test_labels, seed=0, epochs=20,
        augmented=True)
    assert accuracy > 0.8


@requires_mnist
def test_the_backends_benchmark_runs_both_and_they_reach_the_same_set():
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "implicit_backends.py"), "--repeats", "1",
         "--presets", "fixed-l2reg"],
        capture_output=True, text=True, timeout=900, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    runs = [line for line in completed.stdout.splitlines() if "| run 1 |" in line]
    assert [("jaxopt" in line, "jax " in line) for line in runs] == [(True, False),
                                                                    (False, True)]
    losses = [float(line.split("loss ")[1].split(" ")[0]) for line in runs]
    assert abs(losses[0] - losses[1]) < 1e-3
    assert "core JAX / JAXopt = " in completed.stdout


@requires_mnist
def test_the_distillation_benchmark_resumes_where_it_stopped_and_refuses_a_changed_set(
        tmp_path):
    sets, figures = tmp_path / "sets", tmp_path / "figures.json"

    def run(*options):
        return subprocess.run(
            [sys.executable, str(BENCHMARKS / "convnet_distillation.py"), "--datasets", "mnist",
             "--sizes", "1", "--steps", "2", "--epochs", "1", "--augment", "off",
             "--no-progress", "--out-dir", str(sets), "--json", str(figures), *options],
            capture_output=True, text=True, timeout=900, check=False)

    first = run("--seeds", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "distilling (2 steps)" in first.stdout
    (cell,) = json.loads(figures.read_text())["cells"]
    assert [(net["kind"], net["seed"]) for net in cell["networks"]] == [
        ("distilled", 0), ("random real", 0)]
    assert cell["distill_seconds"] > 0 and cell["peak_rss_bytes"] > 0

    second = run("--seeds", "2")  # only the two new networks are trained
    assert second.returncode == 0, second.stderr[-3000:]
    assert "scoring the set in" in second.stdout and "distilling (" not in second.stdout
    trained = [line for line in second.stdout.splitlines() if ": " in line and "% (" in line]
    assert len(trained) == 2 and all("seed 1:" in line for line in trained)
    (cell,) = json.loads(figures.read_text())["cells"]
    assert sorted((net["kind"], net["seed"]) for net in cell["networks"]) == [
        ("distilled", 0), ("distilled", 1), ("random real", 0), ("random real", 1)]
    assert cell["distill_seconds"] > 0  # the first run's figures are kept

    report = subprocess.run(
        [sys.executable, str(BENCHMARKS / "convnet_distillation.py"), "--json", str(figures),
         "--report"], capture_output=True, text=True, timeout=300, check=False)
    assert report.returncode == 0, report.stderr[-3000:]
    (row,) = [line for line in report.stdout.splitlines()
              if line.startswith("| MNIST, 1 per class |")]
    assert row.count("(2)") == 2  # both scores over two networks

    from distill import io
    kept = io.load_distilled(sets / "mnist-1.npz")
    io.save_distilled(sets / "mnist-1.npz", kept.images + 0.01, kept.labels, kept.l2reg,
                      config=kept.config, dataset="mnist")
    changed = run("--seeds", "3")
    assert changed.returncode != 0
    assert "fingerprint changed" in changed.stderr
    assert len(json.loads(figures.read_text())["cells"][0]["networks"]) == 4


def test_the_committed_grid_holds_the_sets_and_the_logged_scores_of_its_networks(tmp_path):
    """Each row of the benchmarks' table comes from the set committed beside it, and
    each network's score and each run's figures are those its source log printed."""
    import numpy as np

    from distill import cache, io

    results = BENCHMARKS / "results"
    grid = results / "grid"
    cells = json.loads((grid / "convnet_grid.json").read_text())["cells"]
    assert {(cell["dataset"], cell["images_per_class"]) for cell in cells} >= {
        ("mnist", 10), ("mnist", 50), ("fashion_mnist", 1), ("fashion_mnist", 10),
        ("fashion_mnist", 50)}
    for cell in cells:
        distilled = io.load_distilled(grid / cell["set_file"])
        assert [cache.fingerprint(distilled.images), cache.fingerprint(distilled.labels)] \
            == cell["set_fingerprint"], cell["set_file"]
        assert len(distilled.images) == 10 * cell["images_per_class"]
        assert (distilled.labels.ndim == 2) == (cell["labels"] == "soft")
        assert distilled.config.to_dict() == cell["config"]
        if "distill_source" in cell:  # distilled by the command line, figures from its log
            log = (BENCHMARKS / cell["distill_source"].split(" ")[0]).read_text()
            assert f"in {cell['config']['steps']} steps, {cell['distill_seconds']:.1f} s" in log
            assert f"stopped at maxiter: {cell['inner_not_converged']} of" in log
        else:  # distilled by the script itself
            assert cell["distill_seconds"] > 0 and cell["peak_rss_bytes"] > 0
        networks = [(net["augment"], net["kind"], net["seed"]) for net in cell["networks"]]
        assert len(networks) == len(set(networks)), cell["set_file"]  # no network twice
        for net in cell["networks"]:
            assert net["protocol"]["augment"] == (net["augment"] == "on")
            assert 0.1 < net["accuracy"] <= 1
            if "source" not in net:  # trained by the script itself
                continue
            source = BENCHMARKS / net["source"].split(" ")[0]
            if source.suffix == ".txt":
                assert f"{100 * net['accuracy']:.2f}%" in source.read_text(), net
            elif source.suffix == ".jsonl":
                logged = [json.loads(line) for line in source.read_text().splitlines()]
                assert any(row["accuracy"] == net["accuracy"] and row["seed"] == net["seed"]
                           and row["augment"] == net["augment"] for row in logged), net
            else:
                assert net["accuracy"] in {value for row in json.loads(source.read_text())[
                    "results"] for value in row["random_real"]}, net
    figure = tmp_path / "grid.png"
    report = subprocess.run(
        [sys.executable, str(BENCHMARKS / "convnet_distillation.py"), "--report", "--json",
         str(grid / "convnet_grid.json"), "--plot", str(figure)], capture_output=True,
        text=True, timeout=300, check=False)
    assert report.returncode == 0, report.stderr[-3000:]
    assert figure.read_bytes().startswith(b"\x89PNG")
    # The table in benchmarks/README.md is this report's, as committed: a header,
    # its rule, and one row per set and protocol.
    table = [line for line in report.stdout.splitlines() if line.startswith("|")]
    assert len(table) == 2 + sum(len({net["augment"] for net in cell["networks"]})
                                 for cell in cells)
    readme = (BENCHMARKS / "README.md").read_text().splitlines()
    start = readme.index(table[0])
    assert readme[start:start + len(table) + 1] == table + [""]
    for cell in cells:
        for augment in {net["augment"] for net in cell["networks"]}:
            values = [net["accuracy"] for net in cell["networks"]
                      if net["augment"] == augment and net["kind"] == "distilled"]
            if len(values) < 2:
                continue
            expected = (f"{100 * np.mean(values):.2f} ± {100 * np.std(values, ddof=1):.2f}% "
                        f"({len(values)})")
            row = f"{cell['images_per_class']} per class"
            protocol = "| with |" if augment == "on" else "| without |"
            assert any(row in line and protocol in line and expected in line
                       for line in report.stdout.splitlines()), (cell["set_file"], expected)


def test_runs_side_by_side_keep_each_others_networks_and_refuse_a_second_set(tmp_path):
    grid = _benchmark("convnet_distillation")
    figures = tmp_path / "figures.json"

    def state(fingerprint, *seeds, seconds=None):
        networks = [{"augment": "on", "kind": "distilled", "seed": seed, "accuracy": 0.9}
                    for seed in seeds]
        return {"machines": [], "cells": [{"dataset": "mnist", "images_per_class": 1,
                                           "labels": "hard", "set_fingerprint": fingerprint,
                                           "distill_seconds": seconds, "networks": networks}]}

    grid.save_state(figures, state(["a", "b"], 0, seconds=12.5))
    second = state(["a", "b"], 1)  # a run that scores the set the first one distilled
    grid.save_state(figures, second)
    assert sorted(net["seed"] for net in second["cells"][0]["networks"]) == [0, 1]
    (cell,) = grid.load_state(figures)["cells"]
    assert sorted(net["seed"] for net in cell["networks"]) == [0, 1]
    assert cell["distill_seconds"] == 12.5  # the first run's figures are kept
    with pytest.raises(SystemExit, match="different set"):
        grid.save_state(figures, state(["c", "d"], 2))
    (cell,) = grid.load_state(figures)["cells"]
    assert len(cell["networks"]) == 2

    # Processes writing at the same time lose nothing: the lock makes them take turns.
    script = (f"import sys; sys.path.insert(0, {str(BENCHMARKS)!r}); import convnet_distillation"
              " as grid\n"
              "for seed in range(int(sys.argv[1]), int(sys.argv[1]) + 15):\n"
              "    state = {'machines': [], 'cells': [{'dataset': 'mnist', 'images_per_class': 1,"
              " 'labels': 'hard', 'set_fingerprint': ['a', 'b'], 'networks': [{'augment': 'on',"
              " 'kind': 'distilled', 'seed': seed, 'accuracy': 0.9}]}]}\n"
              f"    grid.save_state(grid.Path({str(figures)!r}), state)\n")
    writers = [subprocess.Popen([sys.executable, "-c", script, str(first)])
               for first in (100, 200, 300, 400)]
    assert [writer.wait(timeout=300) for writer in writers] == [0, 0, 0, 0]
    (cell,) = grid.load_state(figures)["cells"]
    assert len(cell["networks"]) == 2 + 4 * 15

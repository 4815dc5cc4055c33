"""Cached results never outlive the code that computed them."""

import dataclasses
import re
import shutil
import threading
import time

import numpy as np
import pytest

from distill import cache, distillation, network_distillation
from distill.config import PRESETS, NetworkConfig
from tests.conftest import make_toy_dataset


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """An empty results cache and a computation that counts its calls."""
    monkeypatch.setenv("DISTILL_CACHE_DIR", str(tmp_path))
    calls = []

    def compute():
        calls.append(None)
        return {"values": np.full(3, float(len(calls)))}

    return compute, calls


def test_cached_results_are_computed_once_per_key(counted, tmp_path):
    compute, calls = counted
    first = cache.cached("demo", {"a": 1}, compute)
    again = cache.cached("demo", {"a": 1}, compute)
    other = cache.cached("demo", {"a": 2}, compute)
    assert len(calls) == 2
    np.testing.assert_array_equal(again["values"], first["values"])
    np.testing.assert_array_equal(other["values"], 2 * first["values"])
    # A damaged entry is computed again, never read.
    for entry in (tmp_path / "results").glob("demo-*.npz"):
        entry.write_bytes(b"not an npz file")
    cache.cached("demo", {"a": 1}, compute)
    assert len(calls) == 3
    # Disabled, it neither reads nor writes.
    cache.cached("demo", {"a": 1}, compute, enabled=False)
    assert len(calls) == 4


def test_a_result_asked_for_twice_at_once_is_computed_once(counted):
    compute, calls = counted

    def slow_compute():
        time.sleep(0.5)
        return compute()

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.cached("demo", {}, slow_compute)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1  # the second waited for the first and read its result
    np.testing.assert_array_equal(results[0]["values"], results[1]["values"])


def test_fingerprints_see_every_value():
    values = np.zeros((100, 7), np.float32)
    changed = values.copy()
    changed[57, 3] = 1e-6
    assert cache.fingerprint(values) == cache.fingerprint(values.copy())
    assert cache.fingerprint(values) != cache.fingerprint(changed)
    assert cache.fingerprint(values) != cache.fingerprint(values.astype(np.float64))
    assert cache.fingerprint(values) != cache.fingerprint(values.reshape(7, 100))


def test_a_change_in_the_helpers_source_misses_the_cache(monkeypatch, counted):
    compute, calls = counted
    first = cache.cached("demo", {"a": 1}, compute)
    np.testing.assert_array_equal(cache.cached("demo", {"a": 1}, compute)["values"], first["values"])
    assert len(calls) == 1  # same code, same key: read back

    monkeypatch.setattr(cache, "source_hash", lambda: "0" * 32)  # the helper's code changed
    changed = cache.cached("demo", {"a": 1}, compute)
    assert len(calls) == 2
    np.testing.assert_array_equal(changed["values"], [2.0, 2.0, 2.0])

    versions = {**cache.library_versions(), "jax": "0.0.0"}  # another JAX
    monkeypatch.setattr(cache, "library_versions", lambda: versions)
    cache.cached("demo", {"a": 1}, compute)
    assert len(calls) == 3


def test_the_source_hash_sees_every_python_file_and_only_their_content(tmp_path):
    copy = tmp_path / "distill"
    shutil.copytree(cache.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    # Where the package is installed does not matter (a wheel or the checkout).
    assert cache.source_hash(copy) == cache.source_hash()
    assert len(cache.source_hash()) == 32

    edited = tmp_path / "edited"
    shutil.copytree(copy, edited)
    with open(edited / "evaluate.py", "a") as file:
        file.write("\n# a comment is a change too\n")
    assert cache.source_hash(edited) != cache.source_hash(copy)

    added = tmp_path / "added"
    shutil.copytree(copy, added)
    (added / "new_module.py").write_text("")
    assert cache.source_hash(added) != cache.source_hash(copy)

    renamed = tmp_path / "renamed"
    shutil.copytree(copy, renamed)
    (renamed / "evaluate.py").rename(renamed / "evaluation.py")
    assert cache.source_hash(renamed) != cache.source_hash(copy)

    other_files = tmp_path / "other_files"
    shutil.copytree(copy, other_files)
    (other_files / "notes.txt").write_text("not code")
    assert cache.source_hash(other_files) == cache.source_hash(copy)


def test_the_source_hash_refuses_a_folder_without_code(tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"package_dir={str(tmp_path)!r}")):
        cache.source_hash(tmp_path)


def test_distilled_runs_once_then_reads_back_the_same_result(monkeypatch, tmp_path, toy_train):
    monkeypatch.setenv("DISTILL_CACHE_DIR", str(tmp_path))
    config = dataclasses.replace(PRESETS["learned-l2reg"], steps=4)
    runs = []
    distill = distillation.distill

    def counted_distill(*args, **kwargs):
        runs.append(None)
        return distill(*args, **kwargs)

    monkeypatch.setattr(distillation, "distill", counted_distill)
    first = cache.distilled(toy_train.images, toy_train.labels, config)
    again = cache.distilled(toy_train.images, toy_train.labels, config)
    assert len(runs) == 1
    # Inner solves cut short are warned about when the result is read back too.
    short = dataclasses.replace(config, inner_maxiter=2)
    with pytest.warns(RuntimeWarning, match="maxiter=2"):
        cache.distilled(toy_train.images, toy_train.labels, short)
    with pytest.warns(RuntimeWarning, match="maxiter=2"):
        cache.distilled(toy_train.images, toy_train.labels, short)
    assert len(runs) == 2
    for field in dataclasses.fields(first):
        a, b = getattr(first, field.name), getattr(again, field.name)
        if isinstance(a, (str, int, float, distillation.DistillConfig)):
            assert a == b, field.name
        else:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=field.name)
    assert first.steps == 4 and first.l2reg != config.l2reg  # a real run, λ learned

    cache.distilled(toy_train.images, toy_train.labels, dataclasses.replace(config, seed=1))
    cache.distilled(toy_train.images[::-1], toy_train.labels[::-1], config)
    assert len(runs) == 4  # another seed, other data: distilled again
    assert len(list((tmp_path / "results").glob("distilled-*.npz"))) == 4

    # DISTILL_RUNS_DIR moves the runs, and only them, to a folder of their own.
    monkeypatch.setenv("DISTILL_RUNS_DIR", str(tmp_path / "runs"))
    cache.distilled(toy_train.images, toy_train.labels, config)
    assert len(runs) == 5
    assert len(list((tmp_path / "runs").glob("distilled-*.npz"))) == 1
    assert cache.cached("demo", {}, lambda: {"a": 1}) and not list((tmp_path / "runs").glob("demo-*"))


def test_network_distilled_runs_once_then_reads_back_the_same_result(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILL_CACHE_DIR", str(tmp_path))
    train = make_toy_dataset(num_features=64, per_class=20, seed=2).train
    config = NetworkConfig(images_per_class=1, steps=3, width=4, depth=2, pool_size=2,
                           reset_every=4, batch_size=32, inner_maxiter=1)
    runs = []
    distill = network_distillation.distill_for_network

    def counted(*args, **kwargs):
        runs.append(None)
        return distill(*args, **kwargs)

    monkeypatch.setattr(network_distillation, "distill_for_network", counted)
    options = dict(standardize=(0.5, 0.3), image_shape=(8, 8, 1))
    # Inner solves cut short are warned about, when computed and when read back.
    with pytest.warns(RuntimeWarning, match="maxiter=1"):
        first = cache.network_distilled(train, config, **options)
    with pytest.warns(RuntimeWarning, match="maxiter=1"):
        again = cache.network_distilled(train, config, **options)
    assert len(runs) == 1
    for field in dataclasses.fields(first):
        a, b = getattr(first, field.name), getattr(again, field.name)
        if isinstance(a, (int, float, NetworkConfig)):
            assert a == b, field.name
        else:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=field.name)
    assert first.steps == 3 and first.inner_not_converged == 3
    with pytest.warns(RuntimeWarning):
        cache.network_distilled(train, dataclasses.replace(config, seed=1), **options)
    assert len(runs) == 2  # another seed: distilled again
    assert len(list((tmp_path / "results").glob("network-distilled-*.npz"))) == 2

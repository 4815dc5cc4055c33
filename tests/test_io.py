import numpy as np
import pytest

from distill import io


def _valid():
    return np.random.default_rng(0).normal(size=(10, 784)).astype(np.float32), np.arange(10), 0.1


def test_round_trip_with_plain_numpy(tmp_path):
    images, labels, l2reg = _valid()
    path = io.save_distilled(tmp_path / "sub" / "set.npz", images, labels, l2reg, loss_history=[2.3, 0.6])
    with np.load(path) as arrays:  # readable without the helper
        np.testing.assert_array_equal(arrays["images"], images)
        np.testing.assert_array_equal(arrays["labels"], labels)
        assert float(arrays["l2reg"]) == pytest.approx(0.1)
    loaded = io.load_distilled(path)
    assert loaded.images.dtype == np.float32 and loaded.l2reg == pytest.approx(0.1)
    assert [p.name for p in path.parent.iterdir()] == ["set.npz"]  # no temporary file left


def test_soft_labels_are_accepted(tmp_path):
    images, _, l2reg = _valid()
    soft = np.full((10, 10), 0.1, dtype=np.float32)
    assert io.load_distilled(io.save_distilled(tmp_path / "s.npz", images, soft, l2reg)).labels.shape == (10, 10)


@pytest.mark.parametrize("change, message", [
    (lambda i, l, r: (i[0], l, r), "images must be a 2-D array"),
    (lambda i, l, r: (i.astype(np.int32), l, r), "images must be floating point"),
    (lambda i, l, r: (np.where(np.arange(784) == 3, np.nan, i), l, r), "NaN or infinite"),
    (lambda i, l, r: (i, l + 1, r), r"labels must lie in 0..9"),
    (lambda i, l, r: (i, l[:9], r), "10 images but 9 labels"),
    (lambda i, l, r: (i, l.astype(np.float32), r), "integer labels expected"),
    (lambda i, l, r: (i, l, 0.0), "l2reg must be a positive finite number"),
    (lambda i, l, r: (i, l, np.inf), "l2reg must be a positive finite number"),
])
def test_bad_sets_are_refused_with_a_message(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        io.save_distilled(tmp_path / "bad.npz", *change(*_valid()))
    assert not list(tmp_path.iterdir())


def test_corrupt_and_incomplete_files_are_refused(tmp_path):
    path = io.save_distilled(tmp_path / "set.npz", *_valid())
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable .npz"):
        io.load_distilled(path)
    np.savez(tmp_path / "other.npz", images=np.zeros((10, 784), np.float32))
    with pytest.raises(ValueError, match=r"lacks \['l2reg', 'labels'\]"):
        io.load_distilled(tmp_path / "other.npz")

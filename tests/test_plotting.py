import matplotlib

matplotlib.use("Agg")

import numpy as np

from distill import plotting


def test_distilled_grid_is_the_original_figure():
    images = np.random.default_rng(0).normal(size=(10, 784)) * 0.3
    fig = plotting.plot_distilled_images(images, np.arange(10))
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 10 and len(fig.axes) == 10  # a 2 x 5 grid
    for ax, image in zip(axes, images):
        shown = ax.get_images()[0]
        assert shown.get_cmap().name == "gray_r" and shown.get_clim() == (-1, 1)
        np.testing.assert_allclose(shown.get_array(), image.reshape(28, 28) / np.abs(image).max())


def test_real_grid_hides_unused_panels_and_names_classes():
    fig = plotting.plot_real_images(np.zeros((3, 784)), [0, 1, 2], ["zero", "one", "two"], ncols=2)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(fig.axes) == 4 and len(visible) == 3
    assert [ax.get_title() for ax in visible] == ["zero", "one", "two"]


def test_confusion_matrix_plot_normalizes_rows():
    counts = np.array([[8, 2], [0, 5]])
    ax = plotting.plot_confusion_matrix(counts)
    np.testing.assert_allclose(ax.get_images()[0].get_array(), [[80, 20], [0, 100]])
    assert sorted(t.get_text() for t in ax.texts) == ["100", "20", "80"]


def test_confusion_matrix_plot_refuses_a_non_square_matrix():
    import pytest

    with pytest.raises(ValueError, match=r"square.*\(2, 3\)"):
        plotting.plot_confusion_matrix(np.zeros((2, 3)))


def test_figures_refuse_images_that_are_not_28_by_28_and_labels_that_do_not_match():
    import pytest

    with pytest.raises(ValueError, match=r"images.*784.*\(10, 20\)"):
        plotting.plot_distilled_images(np.zeros((10, 20), np.float32))
    images = np.zeros((3, 784), np.float32)
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        plotting.plot_real_images(images, [0, 1])
    with pytest.raises(ValueError, match=r"labels.*0\.\.1.*2"):
        plotting.plot_real_images(images, [0, 1, 2], class_names=["a", "b"])

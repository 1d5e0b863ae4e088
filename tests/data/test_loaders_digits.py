"""The digits loader reads scikit-learn's shipped CSV without importing sklearn.datasets, with identical values."""

from __future__ import annotations

import numpy as np


def test_digits_arrays_equal_load_digits() -> None:
    from sklearn.datasets import load_digits

    from igcnas.data.loaders import digits_arrays

    images, targets = digits_arrays()
    reference = load_digits()
    assert np.array_equal(images, reference.images) and images.dtype == np.float64
    assert np.array_equal(targets, reference.target) and targets.dtype == np.int64

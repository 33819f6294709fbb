from __future__ import annotations

import numpy as np

from pipeline.data.sampling import kept_patches


def test_keeps_every_positive_and_a_tenth_of_background_never_ignored():
    labels = np.array([0] * 400 + [3] * 20 + [-1] * 30 + [1] * 5)
    kept = kept_patches(labels, "000005", 0.1, seed=0)
    assert set(np.flatnonzero(labels > 0)) <= set(kept)
    assert (labels[kept] == 0).sum() == 40
    assert (labels[kept] >= 0).all()
    assert (np.diff(kept) > 0).all()


def test_same_seed_and_image_give_the_same_draw_and_others_differ():
    labels = np.zeros(500, int)
    a = kept_patches(labels, "000005", 0.1, seed=0)
    assert np.array_equal(a, kept_patches(labels, "000005", 0.1, seed=0))
    assert not np.array_equal(a, kept_patches(labels, "000007", 0.1, seed=0))
    assert not np.array_equal(a, kept_patches(labels, "000005", 0.1, seed=1))


def test_draw_is_pinned_across_machines_and_versions():
    # a change here changes every sampled dataset: it must be deliberate
    kept = kept_patches(np.zeros(100, int), "2008_000123", 0.05, seed=0)
    assert kept.tolist() == PINNED


PINNED = [8, 20, 67, 74, 90]

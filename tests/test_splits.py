from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.data import DataError
from training.data.matrices import liked, normalised, rating_levels, to_csr
from training.data.splits import holdout_split, make_split, temporal_split, validation_split


def _pairs(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["user"], frame["item"], strict=True))


def test_official_split_matches_its_files(tiny) -> None:
    split = make_split(tiny, "u1")
    assert len(split.train) + len(split.test) == len(tiny.ratings)
    assert not _pairs(split.train) & _pairs(split.test)
    with pytest.raises(DataError, match="unknown split 'u9'"):
        make_split(tiny, "u9")


def test_holdout_is_seeded_per_user_and_respects_the_minimum(tiny) -> None:
    a, b = holdout_split(tiny.ratings, 0.2, seed=3), holdout_split(tiny.ratings, 0.2, seed=3)
    c = holdout_split(tiny.ratings, 0.2, seed=4)
    assert _pairs(a.test) == _pairs(b.test) != _pairs(c.test)
    counts = tiny.ratings.groupby("user").size()
    held = a.test.groupby("user").size().reindex(counts.index, fill_value=0)
    assert (held == np.maximum(1, np.floor(counts * 0.2)).where(counts >= 6, 0)).all()


def test_temporal_holds_out_each_users_latest(tiny) -> None:
    split = temporal_split(tiny.ratings, n=2)
    latest_train = split.train.groupby("user")["timestamp"].max()
    earliest_test = split.test.groupby("user")["timestamp"].min()
    assert (earliest_test >= latest_train.reindex(earliest_test.index)).all()
    assert (split.test.groupby("user").size() == 2).all()


def test_validation_is_carved_from_train(tiny) -> None:
    split = make_split(tiny, "u1")
    val = validation_split(split.train, 0.1, seed=0)
    assert _pairs(val.train) | _pairs(val.test) == _pairs(split.train)
    assert not _pairs(val.train) & _pairs(val.test)


def test_sparse_views(tiny) -> None:
    matrix = to_csr(tiny.ratings, tiny.n_users, tiny.n_items)
    assert matrix.shape == (tiny.n_users, tiny.n_items) and matrix.nnz == len(tiny.ratings)
    assert normalised(matrix, tiny.scale).data.max() == 1.0 and normalised(matrix, tiny.scale).data.min() > 0
    assert set(np.unique(rating_levels(matrix, tiny.scale).data)) <= {1, 2, 3, 4, 5}
    assert set(np.unique(liked(matrix, 4.0).data)) == {1.0, 2.0}
    assert (liked(matrix, 4.0).data == 2.0).sum() == (tiny.ratings["rating"] >= 4).sum()


@pytest.mark.parametrize("spec", ["u1", "holdout:0.3", "temporal:2"])
def test_a_split_rebuilds_from_its_recorded_name(tiny, spec: str) -> None:
    first = make_split(tiny, spec, seed=3)
    again = make_split(tiny, first.name)  # what the registry records and export reads back
    assert again.name == first.name
    pd.testing.assert_frame_equal(again.test, first.test)
    pd.testing.assert_frame_equal(again.train, first.train)

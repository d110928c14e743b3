from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from training.data import DataError, detect_format, load_movielens
from training.data.synthetic import Format, SyntheticSpec, generate


@pytest.mark.parametrize("fmt", ["ml-100k", "ml-1m", "csv"])
def test_each_format_reads_back_what_the_generator_wrote(synthetic_dirs: dict[str, Path], fmt: Format) -> None:
    truth = generate(SyntheticSpec(users=120, items=150, mean_ratings=25, format=fmt))
    data = load_movielens(synthetic_dirs[fmt])
    assert detect_format(synthetic_dirs[fmt]) == fmt
    assert (data.n_users, data.n_items, len(data.ratings)) == (120, 150, len(truth["ratings"]))
    # Id maps are stable and invertible; ratings keep their raw ids through them.
    raw_items = data.item_ids.to_raw(data.ratings["item"].to_numpy())
    raw_users = data.user_ids.to_raw(data.ratings["user"].to_numpy())
    merged = truth["ratings"].merge(
        data.ratings.assign(user=raw_users, item=raw_items), on=["user", "item"], suffixes=("", "_read")
    )
    assert len(merged) == len(truth["ratings"])
    np.testing.assert_allclose(merged["rating"], merged["rating_read"])
    assert data.genres.shape == (150, len(data.genre_names))
    assert data.genres.sum() == truth["movies"][list(truth["genre_names"])].to_numpy().sum()
    assert data.items["year"].notna().all()


def test_scales_and_demographics_differ_by_family(synthetic_dirs: dict[str, Path]) -> None:
    csv = load_movielens(synthetic_dirs["csv"])
    assert (csv.scale.low, csv.scale.step) == (0.5, 0.5)
    assert set(np.unique(csv.ratings["rating"] * 2) % 1) == {0.0}
    assert list(csv.users.columns) == []
    ml1m = load_movielens(synthetic_dirs["ml-1m"])
    assert list(ml1m.users.columns) == ["age", "gender", "occupation"]
    assert not np.array_equal(csv.item_ids.raw_ids, np.arange(1, 151))  # sparse ids exercise the map


def test_format_can_be_forced(synthetic_dirs: dict[str, Path]) -> None:
    with pytest.raises(DataError, match="required file is missing"):
        load_movielens(synthetic_dirs["csv"], "ml-1m")


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(src, dst)
    return dst


def _append(path: Path, line: str) -> int:
    lines = path.read_text(encoding="latin-1").splitlines()
    lines.append(line)
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")
    return len(lines)


def test_missing_folder_and_files_are_named(tmp_path: Path, synthetic_dirs: dict[str, Path]) -> None:
    with pytest.raises(DataError, match="not a directory"):
        load_movielens(tmp_path / "nope")
    with pytest.raises(DataError, match="no MovieLens ratings file"):
        load_movielens(tmp_path)
    folder = _copy(synthetic_dirs["ml-100k"], tmp_path)
    (folder / "u.item").unlink()
    with pytest.raises(DataError, match=r"u\.item: required file is missing"):
        load_movielens(folder)


@pytest.mark.parametrize(
    ("fmt", "file", "line", "message"),
    [
        ("ml-100k", "u.data", "1\t2\t3", r"u\.data:{n}: malformed line, rating.*|u\.data:{n}: malformed"),
        ("ml-100k", "u.data", "1\t2\t3\t4\t5", r"u\.data:{n}: malformed line, expected 4 fields, saw 5"),
        ("ml-1m", "ratings.dat", "1::2::x::4", r"ratings\.dat:{n}: malformed line, rating='x' is not a number"),
        ("csv", "ratings.csv", "1,4,abc,5", r"ratings\.csv:{n}: malformed line, rating='abc'"),
    ],
)
def test_malformed_lines_name_file_and_line(
    tmp_path: Path, synthetic_dirs: dict[str, Path], fmt: str, file: str, line: str, message: str
) -> None:
    folder = _copy(synthetic_dirs[fmt], tmp_path)
    n = _append(folder / file, line)
    with pytest.raises(DataError, match=message.format(n=n)):
        load_movielens(folder)


def test_rating_off_scale_is_reported(tmp_path: Path, synthetic_dirs: dict[str, Path]) -> None:
    folder = _copy(synthetic_dirs["ml-100k"], tmp_path)
    _append(folder / "u.data", "1\t2\t7\t880000000")
    with pytest.raises(DataError, match=r"1 ratings outside the scale 1\.\.5.*rating 7"):
        load_movielens(folder)
    folder = _copy(synthetic_dirs["csv"], tmp_path / "csv")
    _append(folder / "ratings.csv", "1,4,3.25,880000000")
    with pytest.raises(DataError, match=r"outside the scale 0\.5\.\.5"):
        load_movielens(folder)


def test_unknown_ids_in_ratings_are_reported(tmp_path: Path, synthetic_dirs: dict[str, Path]) -> None:
    folder = _copy(synthetic_dirs["ml-100k"], tmp_path)
    _append(folder / "u.data", "1\t99999\t3\t880000000")
    with pytest.raises(DataError, match=r"1 ratings name item ids missing from the item file \(e\.g\. 99999\)"):
        load_movielens(folder)


def test_duplicate_pairs_keep_the_latest_rating(tmp_path: Path, synthetic_dirs: dict[str, Path]) -> None:
    folder = _copy(synthetic_dirs["ml-100k"], tmp_path)
    first = (folder / "u.data").read_text().splitlines()[0].split("\t")
    user, item = int(first[0]), int(first[1])
    _append(folder / "u.data", f"{user}\t{item}\t1\t1999999999")  # newer than any original
    data = load_movielens(folder)
    assert data.duplicates_dropped == 1
    row = data.ratings[
        (data.ratings["user"] == data.user_ids.index_of(user)) & (data.ratings["item"] == data.item_ids.index_of(item))
    ]
    assert row["rating"].tolist() == [1.0]


def test_real_ml100k_loads_completely(ml100k) -> None:
    assert (ml100k.n_users, ml100k.n_items, len(ml100k.ratings)) == (943, 1682, 100_000)
    assert len(ml100k.genre_names) == 19
    assert ml100k.items.loc[0, "title"] == "Toy Story (1995)"

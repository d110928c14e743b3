"""Readers for the MovieLens families: ml-100k, ml-1m (``::``) and the CSV releases.

Every reader validates what it reads and raises :class:`DataError` with the file and line
that is wrong, so a broken download is diagnosed at load time and not as a shape error deep
inside training.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from training.data.dataset import IdMap, MovieLens, RatingScale

log = logging.getLogger(__name__)

Format = Literal["ml-100k", "ml-1m", "csv"]
FORMATS: tuple[Format, ...] = ("ml-100k", "ml-1m", "csv")
# The file whose presence identifies each format.
_MARKERS: dict[Format, str] = {"ml-100k": "u.data", "ml-1m": "ratings.dat", "csv": "ratings.csv"}
_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")
_FIELD_COUNT = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
ML100K_SCALE = RatingScale(1.0, 5.0, 1.0)
ML1M_SCALE = RatingScale(1.0, 5.0, 1.0)
CSV_SCALE = RatingScale(0.5, 5.0, 0.5)


class DataError(ValueError):
    """The data on disk is missing, malformed or inconsistent; the message says where."""


# Said wherever the data is not there: a new user's first run fails here, and MovieLens cannot ship
# with the code (its licence forbids redistribution).
WHERE_MOVIELENS_COMES_FROM = (
    "MovieLens 100K comes from GroupLens: https://files.grouplens.org/datasets/movielens/ml-100k.zip; unzip it "
    "to ../shared/data/movielens/ml-100k beside the clone, or point DATA= (make), --data or $RECSYS_DATA at a "
    "MovieLens folder (or a synthetic one: python -m training.data.synthetic DIR)"
)


def detect_format(folder: Path) -> Format:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a directory; {WHERE_MOVIELENS_COMES_FROM}")
    for fmt, marker in _MARKERS.items():
        if (folder / marker).is_file():
            return fmt
    wanted = ", ".join(f"{m} ({f})" for f, m in _MARKERS.items())
    raise DataError(
        f"{folder}: no MovieLens ratings file found; expected one of {wanted}. {WHERE_MOVIELENS_COMES_FROM}"
    )


def load_movielens(folder: Path | str, fmt: Format | None = None) -> MovieLens:
    """Read a MovieLens folder; the format is detected from its files unless given."""
    folder = Path(folder)
    fmt = fmt or detect_format(folder)
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    reader = {"ml-100k": _read_100k, "ml-1m": _read_1m, "csv": _read_csv_family}[fmt]
    dataset = reader(folder)
    log.info(
        "loaded dataset=%s users=%d items=%d ratings=%d duplicates_dropped=%d",
        dataset.name,
        dataset.n_users,
        dataset.n_items,
        len(dataset.ratings),
        dataset.duplicates_dropped,
    )
    return dataset


def _require(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: required file is missing")
    return path


def read_table(
    path: Path,
    *,
    sep: str,
    names: list[str],
    numeric: dict[str, str],
    header: bool = False,
    encoding: str = "utf-8",
    text: str | None = None,
) -> pd.DataFrame:
    """Read a delimited file, turning parser failures into ``file:line`` errors.

    ``numeric`` maps columns to the dtype they must parse as; a value that does not parse
    names its line. ``text`` replaces the file's contents (for formats pre-processed in memory).
    """
    first_line = 2 if header else 1

    def source() -> io.StringIO | Path:
        return io.StringIO(text) if text is not None else path

    kwargs = dict(
        sep=sep,
        names=names,
        header=0 if header else None,
        encoding=encoding,
        engine="c",
        quoting=3 if sep != "," else 0,
        keep_default_na=False,
        na_values=[""],
    )
    try:
        # Fast path: parse numbers directly, so ml-25m never materialises 100M Python strings.
        frame = pd.read_csv(source(), dtype={c: numeric.get(c, str) for c in names}, **kwargs)
        if not frame[list(numeric)].isna().to_numpy().any():
            return frame
    except pd.errors.ParserError as err:
        match = _FIELD_COUNT.search(str(err))
        if match:
            want, line, saw = match.groups()
            raise DataError(f"{path}:{line}: malformed line, expected {want} fields, saw {saw}") from None
        raise DataError(f"{path}: cannot parse: {err}") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid {encoding} text ({err.reason})") from None
    except (ValueError, TypeError):
        pass  # some value does not parse as a number: find its line below
    frame = pd.read_csv(source(), dtype=str, **kwargs)
    for column in numeric:
        bad = pd.to_numeric(frame[column], errors="coerce").isna().to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{path}:{row + first_line}: malformed line, {column}={frame[column].iloc[row]!r} "
                f"is not a number ({int(bad.sum())} such lines)"
            )
    raise DataError(f"{path}: cannot parse numeric columns {sorted(numeric)}")


def _year_from_title(titles: pd.Series) -> pd.Series:
    return titles.str.extract(_YEAR_IN_TITLE, expand=False).astype("float64")


def read_ratings_file(path: Path, fmt: Format) -> pd.DataFrame:
    """Ratings with raw ids: columns user, item, rating, timestamp."""
    names = ["user", "item", "rating", "timestamp"]
    numeric = {"user": "int64", "item": "int64", "rating": "float32", "timestamp": "int64"}
    if fmt == "ml-100k":
        return read_table(_require(path), sep="\t", names=names, numeric=numeric)
    if fmt == "ml-1m":
        text = _require(path).read_text(encoding="latin-1").replace("::", "\t")
        return read_table(path, sep="\t", names=names, numeric=numeric, text=text)
    return read_table(_require(path), sep=",", names=names, numeric=numeric, header=True)


def _read_100k(folder: Path) -> MovieLens:
    ratings = read_ratings_file(folder / "u.data", "ml-100k")
    genre_table = read_table(
        _require(folder / "u.genre"), sep="|", names=["name", "flag"], numeric={"flag": "int64"}, encoding="latin-1"
    )
    genre_names = genre_table.sort_values("flag")["name"].tolist()
    item_cols = ["item", "title", "release", "video_release", "url", *genre_names]
    items = read_table(
        _require(folder / "u.item"),
        sep="|",
        names=item_cols,
        numeric={"item": "int64", **{g: "int8" for g in genre_names}},
        encoding="latin-1",
    )
    release_year = pd.to_numeric(items["release"].str[-4:], errors="coerce")
    items["year"] = release_year.fillna(_year_from_title(items["title"].fillna("")))
    users = read_table(
        _require(folder / "u.user"),
        sep="|",
        names=["user", "age", "gender", "occupation", "zip"],
        numeric={"user": "int64", "age": "int64"},
        encoding="latin-1",
    )
    genres = items[genre_names].to_numpy(dtype=np.int8)
    return build_dataset("ml-100k", folder, ratings, items, genres, genre_names, users, ML100K_SCALE)


def _split_genres(labels: pd.Series) -> tuple[np.ndarray, list[str]]:
    lists = labels.fillna("").str.split("|")
    names = sorted({g for gs in lists for g in gs if g and g != "(no genres listed)"})
    column = {g: j for j, g in enumerate(names)}
    genres = np.zeros((len(labels), len(names)), dtype=np.int8)
    for i, gs in enumerate(lists):
        for g in gs:
            if g in column:
                genres[i, column[g]] = 1
    return genres, names


def _read_1m(folder: Path) -> MovieLens:
    ratings = read_ratings_file(folder / "ratings.dat", "ml-1m")
    movies_path = _require(folder / "movies.dat")
    items = read_table(
        movies_path,
        sep="\t",
        names=["item", "title", "genres"],
        numeric={"item": "int64"},
        text=movies_path.read_text(encoding="latin-1").replace("::", "\t"),
    )
    users = None
    users_path = folder / "users.dat"
    if users_path.is_file():
        users = read_table(
            users_path,
            sep="\t",
            names=["user", "gender", "age", "occupation", "zip"],
            numeric={"user": "int64", "age": "int64"},
            text=users_path.read_text(encoding="latin-1").replace("::", "\t"),
        )
    items["year"] = _year_from_title(items["title"])
    genres, genre_names = _split_genres(items["genres"])
    return build_dataset("ml-1m", folder, ratings, items, genres, genre_names, users, ML1M_SCALE)


def _read_csv_family(folder: Path) -> MovieLens:
    ratings = read_ratings_file(folder / "ratings.csv", "csv")
    items = read_table(
        _require(folder / "movies.csv"),
        sep=",",
        names=["item", "title", "genres"],
        numeric={"item": "int64"},
        header=True,
    )
    items["year"] = _year_from_title(items["title"].str.strip())
    genres, genre_names = _split_genres(items["genres"])
    return build_dataset(folder.name or "csv", folder, ratings, items, genres, genre_names, None, CSV_SCALE)


def _check_scale(ratings: pd.DataFrame, scale: RatingScale, path: Path) -> None:
    values = ratings["rating"].to_numpy()
    on_grid = np.isclose((values - scale.low) / scale.step, np.round((values - scale.low) / scale.step))
    bad = (values < scale.low) | (values > scale.high) | ~on_grid
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: {int(bad.sum())} ratings outside the scale {scale.low:g}..{scale.high:g} "
            f"(step {scale.step:g}); first: rating {values[row]:g} for user {ratings['user'].iloc[row]}, "
            f"item {ratings['item'].iloc[row]}"
        )


def _check_known(raw: pd.Series, ids: IdMap, what: str, where: Path) -> np.ndarray:
    index = ids.to_index(raw.to_numpy())
    unknown = index < 0
    if unknown.any():
        examples = ", ".join(str(x) for x in pd.unique(raw[unknown])[:5])
        raise DataError(
            f"{where}: {int(unknown.sum())} ratings name {what} ids missing from the {what} file (e.g. {examples})"
        )
    return index


def drop_duplicates(ratings: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep the latest rating of each (user, item) pair; return how many were dropped."""
    ordered = ratings.sort_values(["user", "item", "timestamp"], kind="stable")
    latest = ordered.drop_duplicates(["user", "item"], keep="last")
    return latest.sort_index(), len(ratings) - len(latest)


def build_dataset(
    name: str,
    folder: Path,
    ratings: pd.DataFrame,
    items: pd.DataFrame,
    genres: np.ndarray,
    genre_names: list[str],
    users: pd.DataFrame | None,
    scale: RatingScale,
) -> MovieLens:
    """Validate raw-id tables and map them to the dense-index representation."""
    if items["item"].duplicated().any():
        dup = items.loc[items["item"].duplicated(), "item"].iloc[0]
        raise DataError(f"{folder}: item id {dup} appears more than once in the items file")
    _check_scale(ratings, scale, folder)
    order = np.argsort(items["item"].to_numpy(), kind="stable")
    items, genres = items.iloc[order].reset_index(drop=True), genres[order]
    item_ids = IdMap(items["item"].to_numpy())
    if users is not None:
        users = users.sort_values("user").reset_index(drop=True)
        user_ids = IdMap(users["user"].to_numpy())
        demographics = users[["age", "gender", "occupation"]].copy()
        demographics["occupation"] = demographics["occupation"].astype(str)
    else:
        user_ids = IdMap(np.unique(ratings["user"].to_numpy()))
        demographics = pd.DataFrame(index=pd.RangeIndex(len(user_ids)))
    mapped = pd.DataFrame(
        {
            "user": _check_known(ratings["user"], user_ids, "user", folder),
            "item": _check_known(ratings["item"], item_ids, "item", folder),
            "rating": ratings["rating"].to_numpy(dtype=np.float32),
            "timestamp": ratings["timestamp"].to_numpy(dtype=np.int64),
        }
    )
    mapped, dropped = drop_duplicates(mapped)
    if dropped:
        log.warning("dropped duplicate ratings dataset=%s count=%d policy=keep_latest", name, dropped)
    return MovieLens(
        name=name,
        ratings=mapped.reset_index(drop=True),
        items=items[["title", "year"]].copy(),
        genres=genres.astype(np.int8),
        genre_names=list(genre_names),
        users=demographics,
        user_ids=user_ids,
        item_ids=item_ids,
        scale=scale,
        source=folder,
        duplicates_dropped=dropped,
    )

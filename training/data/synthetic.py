"""Synthetic MovieLens-shaped data with a latent-factor ground truth.

Writes a folder in any supported format, so tests exercise the real readers and scale
benchmarks can ask for a 60k-item catalogue. Users choose items by taste (latent factors
shared with the genres) and popularity, and rate them by taste plus noise, so models that
learn the structure beat popularity on it.

    python -m training.data.synthetic OUT --format csv --users 2000 --items 60000
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from training.data.readers import FORMATS, Format

GENRES = [
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]
OCCUPATIONS = ["engineer", "student", "writer", "educator", "artist", "other"]


@dataclass(frozen=True)
class SyntheticSpec:
    users: int = 300
    items: int = 400
    genres: int = 8
    dim: int = 8
    mean_ratings: int = 40
    min_ratings: int = 8
    seed: int = 0
    format: Format = "ml-100k"


def generate(spec: SyntheticSpec) -> dict[str, pd.DataFrame]:
    """Ratings (raw ids), items and users as tables; the taste model is described above."""
    rng = np.random.default_rng(spec.seed)
    n_genres = min(spec.genres, len(GENRES))
    genre_axes = rng.normal(size=(n_genres, spec.dim))
    item_genres = (rng.random((spec.items, n_genres)) < 1.5 / n_genres).astype(np.int8)
    item_genres[np.arange(spec.items), rng.integers(0, n_genres, spec.items)] = 1
    item_factors = 0.5 * rng.normal(size=(spec.items, spec.dim)) + item_genres @ genre_axes / 1.5
    user_factors = rng.normal(size=(spec.users, spec.dim))
    popularity = -1.1 * np.log1p(rng.permutation(spec.items))  # a Zipf-like head
    affinity = user_factors @ item_factors.T / np.sqrt(spec.dim)

    lengths = np.clip(
        rng.geometric(1.0 / spec.mean_ratings, spec.users), spec.min_ratings, max(spec.min_ratings, spec.items // 2)
    )
    users, items, values = [], [], []
    for u in range(spec.users):
        # Gumbel top-k: a sample without replacement proportional to exp(taste + popularity).
        keys = 1.5 * affinity[u] + popularity + rng.gumbel(size=spec.items)
        chosen = np.argpartition(-keys, lengths[u] - 1)[: lengths[u]]
        users.append(np.full(len(chosen), u))
        items.append(chosen)
        values.append(3.4 + 1.1 * affinity[u, chosen] + rng.normal(0, 0.6, len(chosen)))
    user, item, raw = np.concatenate(users), np.concatenate(items), np.concatenate(values)

    half_stars = spec.format == "csv"
    step, low = (0.5, 0.5) if half_stars else (1.0, 1.0)
    rating = np.clip(np.round(raw / step) * step, low, 5.0)
    item_id_step = 3 if half_stars else 1  # non-contiguous ids, as in ml-latest
    ratings = (
        pd.DataFrame(
            {
                "user": user + 1,
                "item": item * item_id_step + 1,
                "rating": rating,
                "timestamp": 874_000_000 + rng.integers(0, 20_000_000, len(user)),
            }
        )
        .sample(frac=1.0, random_state=spec.seed)
        .reset_index(drop=True)
    )
    years = rng.integers(1930, 2000, spec.items)
    names = GENRES[:n_genres]
    movies = pd.DataFrame(
        {
            "item": np.arange(spec.items) * item_id_step + 1,
            "title": [f"Synthetic Movie {i} ({y})" for i, y in enumerate(years)],
            "year": years,
            "genres": ["|".join(names[j] for j in np.flatnonzero(row)) for row in item_genres],
        }
    )
    for j, g in enumerate(names):
        movies[g] = item_genres[:, j]
    people = pd.DataFrame(
        {
            "user": np.arange(spec.users) + 1,
            "age": rng.integers(15, 70, spec.users),
            "gender": rng.choice(["M", "F"], spec.users),
            "occupation": rng.choice(OCCUPATIONS, spec.users),
            "zip": [f"{z:05d}" for z in rng.integers(0, 99999, spec.users)],
        }
    )
    return {"ratings": ratings, "movies": movies, "users": people, "genre_names": pd.Series(names)}


def _write_lines(path: Path, rows: list[str], encoding: str = "utf-8") -> None:
    path.write_text("".join(f"{r}\n" for r in rows), encoding=encoding)


def _ratings_lines(ratings: pd.DataFrame, sep: str) -> list[str]:
    return [sep.join((str(u), str(i), f"{r:g}", str(t))) for u, i, r, t in ratings.itertuples(index=False)]


def write(folder: Path | str, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Write a MovieLens-shaped folder in ``spec.format``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tables = generate(spec)
    ratings, movies, people, names = tables["ratings"], tables["movies"], tables["users"], tables["genre_names"]
    if spec.format == "ml-100k":
        _write_lines(folder / "u.data", _ratings_lines(ratings, "\t"))
        _write_lines(folder / "u.genre", [f"{g}|{j}" for j, g in enumerate(names)], "latin-1")
        _write_lines(
            folder / "u.item",
            [
                "|".join(
                    [
                        str(m.item),
                        m.title,
                        f"01-Jan-{m.year}",
                        "",
                        "http://example.invalid/",
                        *(str(getattr(m, f"g{j}")) for j in range(len(names))),
                    ]
                )
                for m in movies.rename(columns={g: f"g{j}" for j, g in enumerate(names)}).itertuples()
            ],
            "latin-1",
        )
        _write_lines(
            folder / "u.user", [f"{p.user}|{p.age}|{p.gender}|{p.occupation}|{p.zip}" for p in people.itertuples()]
        )
        # Five disjoint 20% test folds, as the official mku.sh makes u1..u5.
        fold = np.arange(len(ratings)) % 5
        for k in range(5):
            _write_lines(folder / f"u{k + 1}.base", _ratings_lines(ratings[fold != k], "\t"))
            _write_lines(folder / f"u{k + 1}.test", _ratings_lines(ratings[fold == k], "\t"))
    elif spec.format == "ml-1m":
        _write_lines(folder / "ratings.dat", _ratings_lines(ratings, "::"))
        _write_lines(
            folder / "movies.dat", [f"{m.item}::{m.title}::{m.genres}" for m in movies.itertuples()], "latin-1"
        )
        _write_lines(
            folder / "users.dat",
            [f"{p.user}::{p.gender}::{p.age}::{OCCUPATIONS.index(p.occupation)}::{p.zip}" for p in people.itertuples()],
            "latin-1",
        )
    elif spec.format == "csv":
        _write_lines(folder / "ratings.csv", ["userId,movieId,rating,timestamp", *_ratings_lines(ratings, ",")])
        _write_lines(
            folder / "movies.csv",
            [
                "movieId,title,genres",
                *(f'{m.item},"{m.title}",{m.genres or "(no genres listed)"}' for m in movies.itertuples()),
            ],
        )
    else:
        raise ValueError(f"unknown format {spec.format!r}; choose one of {', '.join(FORMATS)}")
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--format", choices=FORMATS, default="ml-100k")
    parser.add_argument("--users", type=int, default=SyntheticSpec.users)
    parser.add_argument("--items", type=int, default=SyntheticSpec.items)
    parser.add_argument("--mean-ratings", type=int, default=SyntheticSpec.mean_ratings)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    spec = SyntheticSpec(
        users=args.users, items=args.items, mean_ratings=args.mean_ratings, seed=args.seed, format=args.format
    )
    print(f"wrote {write(args.out, spec)}")


if __name__ == "__main__":
    main()

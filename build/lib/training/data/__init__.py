"""Reading, validating, splitting and transforming MovieLens data."""

from training.data.dataset import IdMap, MovieLens, RatingScale
from training.data.readers import DataError, detect_format, load_movielens

__all__ = ["DataError", "IdMap", "MovieLens", "RatingScale", "detect_format", "load_movielens"]

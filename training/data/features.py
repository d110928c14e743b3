"""Categorical side features: user demographics and item year buckets, with saved vocabularies.

Index 0 always means 'unknown', so a user with no demographics or an item with no year still
gets a valid feature (the two-tower model learns what 'unknown' implies).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

AGE_EDGES = (18, 25, 35, 45, 50, 56)  # the ml-1m age groups, also applied to ml-100k ages
DECADES = tuple(range(1910, 2030, 10))


@dataclass(frozen=True)
class Demographics:
    """Vocabularies for gender and occupation; age is bucketed by fixed edges."""

    genders: tuple[str, ...]
    occupations: tuple[str, ...]

    @classmethod
    def fit(cls, users: pd.DataFrame) -> Demographics:
        if "gender" not in users:
            return cls((), ())
        return cls(
            tuple(sorted(users["gender"].astype(str).unique())), tuple(sorted(users["occupation"].astype(str).unique()))
        )

    @property
    def sizes(self) -> tuple[int, int, int]:
        """Vocabulary sizes (age, gender, occupation), each including 'unknown'."""
        return len(AGE_EDGES) + 2, len(self.genders) + 1, len(self.occupations) + 1

    def encode(self, users: pd.DataFrame) -> np.ndarray:
        """(n, 3) int64 codes; all zeros where the data set has no demographics."""
        codes = np.zeros((len(users), 3), dtype=np.int64)
        if "gender" not in users or not self.genders:
            return codes
        age = pd.to_numeric(users["age"], errors="coerce").to_numpy(np.float64)
        codes[:, 0] = np.where(np.isnan(age), 0, np.searchsorted(AGE_EDGES, np.nan_to_num(age), side="right") + 1)
        for column, vocab in ((1, self.genders), (2, self.occupations)):
            lookup = {v: i + 1 for i, v in enumerate(vocab)}
            codes[:, column] = [lookup.get(str(v), 0) for v in users.iloc[:, column]]
        return codes

    def to_dict(self) -> dict[str, list[str]]:
        return {"genders": list(self.genders), "occupations": list(self.occupations)}


def year_buckets(years: np.ndarray) -> np.ndarray:
    """Decade index per item, 0 for an unknown year."""
    years = np.asarray(years, dtype=np.float64)
    bucket = np.searchsorted(DECADES, np.nan_to_num(years, nan=0.0), side="right")
    return np.where(np.isnan(years), 0, bucket).astype(np.int64)


N_YEAR_BUCKETS = len(DECADES) + 1

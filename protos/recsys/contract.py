"""The serving contract export writes and the server reads, in one place (issue #15).

What it holds: the served models and the Triton roles each one calls, the tensor names of every
graph kind, the variant table (format, backend, file, precision) and the serving bundle's file
names with its schema version. Export builds graphs and bundles to it and the server calls and
reads by it, so neither copies a list of models or a tensor name from the other: export never
imports the server, and the server never imports torch or the training code.

It lives in ``protos/recsys`` beside the gRPC contract (``recsys.v1``), as the other half of the
project's interface: plain Python with no dependency at all, installed with the ``recsys``
package that the server, export and the SDK already import.

Adding a model is a row in ``CATALOG_SCORERS`` here when it scores the catalogue through the
catalogue graph (docs/export.md, "Adding a model"); a ``STRATEGY_<NAME>`` value in the proto's
``Strategy`` enum, optional, lets a caller ask for it alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GraphKind:
    """The tensors of one kind of exported graph, in their positional order (libtorch ``NAME__i``)."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


# (item index, rating) pairs, exclusions, candidates -> top-N and a score per candidate.
CATALOG = GraphKind(
    ("ITEM_IDX__0", "RATING__1", "EXCLUDE_IDX__2", "CANDIDATE_IDX__3"),
    ("TOP_IDX__0", "TOP_SCORE__1", "CANDIDATE_SCORE__2"),
)
USER_TOWER = GraphKind(("ITEM_IDX__0", "RATING__1", "DEMOGRAPHICS__2"), ("USER_EMBEDDING__0",))
ITEM_SCORER = GraphKind(("USER_EMBEDDING__0", "EXCLUDE_IDX__1"), ("TOP_IDX__0", "TOP_SCORE__1"))
TWO_TOWER = GraphKind(
    ("ITEM_IDX__0", "RATING__1", "DEMOGRAPHICS__2", "EXCLUDE_IDX__3"),
    ("TOP_IDX__0", "TOP_SCORE__1", "USER_EMBEDDING__2"),
)

# Models served by one catalogue graph each, named as the model.
CATALOG_SCORERS = ("sae", "rbm", "ease")
# The candidate generator: the one-graph two-tower model, or its two halves in a row.
GENERATOR = "two_tower"
# Every served model: the server's model branches and single-model strategies, the drift monitor's
# score features, the members a fusion may weight (besides the local popularity and content lists).
MODELS = (*CATALOG_SCORERS, GENERATOR)

# Fewer ratings than this: the ensemble's content rung (the generator alone, plus the genre profile);
# this many or more: the full rung, where the catalogue scorers rank too. The server's default
# (``full_min_ratings``) and the population of the drift reference's catalogue-scorer score features.
FULL_MIN_RATINGS = 10

# What a request may ask to rank with: the ensemble (the default), one model alone, or popularity.
STRATEGIES = ("ensemble", *MODELS, "popular")


def strategy_values(enum: Any) -> dict[str, Any]:
    """Strategy name -> its value in the proto's ``Strategy`` enum (``recommender_pb2.Strategy``),
    for those with a ``STRATEGY_<NAME>`` value: a model without one serves in the ensemble only.
    The values are typed as the enum's own (Any here: the contract imports nothing, not even the stubs)."""
    names = set(enum.keys())
    return {s: enum.Value(n) for s in STRATEGIES if (n := f"STRATEGY_{s.upper()}") in names}


# The full rung in one graph (issue #14): the generator's candidates ranked by the catalogue
# scorers inside one Triton model, so the two-stage plan is one call instead of two rounds.
# It takes the two-tower inputs plus the server's local candidates (CANDIDATE_IDX, -1 padded to
# the candidate count C: its width is C); GENERATED_IDX is the candidates the rankers scored, the
# top C by the generator's score of its own top-N and the local ones (-1 where fewer), which is
# what the per-model plan hands its rankers. Then each member's outputs follow, named by it.
FULL_RUNG = "full_rung"
FULL_RUNG_INPUTS = (*TWO_TOWER.inputs, "CANDIDATE_IDX__4")
GENERATED = "GENERATED_IDX__0"


def full_rung_members(weights: Mapping[str, float]) -> tuple[str, ...]:
    """The models a full-rung graph runs for a fusion: the generator, then the catalogue scorers
    with a weight, in contract order (export builds the graph by it, the server calls by it)."""
    return (GENERATOR, *(m for m in CATALOG_SCORERS if weights.get(m, 0) > 0))


def full_rung_outputs(members: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Each member's outputs in the full-rung graph, in its own graph kind's order, as
    ``<MEMBER>_<NAME>__<i>`` (``RBM_CANDIDATE_SCORE__6``) after ``GENERATED_IDX__0``."""
    own = {GENERATOR: TWO_TOWER, **dict.fromkeys(CATALOG_SCORERS, CATALOG)}
    out, i = {}, 1
    for member in members:
        names = own[member].outputs
        out[member] = tuple(f"{member.upper()}_{n.split('__')[0]}__{i + k}" for k, n in enumerate(names))
        i += len(names)
    return out


def full_rung(members: tuple[str, ...]) -> GraphKind:
    """The graph kind of a full-rung model running ``members`` (``full_rung_members``)."""
    return GraphKind(
        FULL_RUNG_INPUTS, (GENERATED, *(n for names in full_rung_outputs(members).values() for n in names))
    )


# Triton role (the model-repository name stem) -> its graph kind. The full rung's outputs depend on
# the members it was exported with (``full_rung(members)``); the kind here is that of every model.
ROLES: dict[str, GraphKind] = {
    **dict.fromkeys(CATALOG_SCORERS, CATALOG),
    GENERATOR: TWO_TOWER,
    f"{GENERATOR}_user": USER_TOWER,
    f"{GENERATOR}_items": ITEM_SCORER,
    FULL_RUNG: full_rung((GENERATOR, *CATALOG_SCORERS)),
}
# Without the one-graph two-tower model the halves answer, one round trip later; without the
# full-rung model the per-model plans do: neither is needed for SERVING.
OPTIONAL_ROLES = (GENERATOR, FULL_RUNG)
# Model -> the roles it calls in order, alternatives preferred first (the first all ready is used).
BRANCHES: dict[str, tuple[tuple[str, ...], ...]] = {
    **{m: ((m,),) for m in CATALOG_SCORERS},
    GENERATOR: ((GENERATOR,), (f"{GENERATOR}_user", f"{GENERATOR}_items")),
}


@dataclass(frozen=True)
class Variant:
    name: str  # e.g. "onnx_int8"
    format: str  # "onnx" or "torchscript"
    backend: str  # Triton backend that serves it natively
    filename: str
    precision: str  # what a request's precision asks for: "fp32", "int8" or "fp16"
    cpu_only: bool = False  # PyTorch's dynamic int8 Linear has no CUDA kernels (it crashes there)

    @property
    def quantized(self) -> bool:
        return self.precision != "fp32"


VARIANTS = {
    v.name: v
    for v in (
        Variant("onnx_fp32", "onnx", "onnxruntime", "model.onnx", "fp32"),
        Variant("onnx_int8", "onnx", "onnxruntime", "model.onnx", "int8"),
        Variant("onnx_fp16", "onnx", "onnxruntime", "model.onnx", "fp16"),
        Variant("torchscript_fp32", "torchscript", "pytorch", "model.pt", "fp32"),
        Variant("torchscript_int8", "torchscript", "pytorch", "model.pt", "int8", cpu_only=True),
    )
}
# Precision asked for -> the variants that provide it, preferred first: TorchScript, then ONNX.
PRECISIONS: dict[str, tuple[str, ...]] = {
    p: tuple(
        sorted((n for n, v in VARIANTS.items() if v.precision == p), key=lambda n: VARIANTS[n].format != "torchscript")
    )
    for p in ("fp32", "int8", "fp16")
}


def model_name(role: str, variant: str) -> str:
    """The Triton model of a role in a variant: ``sae_torchscript_fp32``."""
    return f"{role}_{variant}"


# The serving bundle (``serving_bundle/<N>/``): what the files are called, and the schema version
# that says what they mean; the server refuses a schema it does not know.
SCHEMA_VERSION = 1
BUNDLE_FILES = {
    "manifest": "manifest.json",
    "catalog": "catalog.json",
    "id_maps": "id_maps.json",
    "popularity": "popularity.npz",
    "histories": "histories.npz",
    "demographics": "demographics.npy",
    "demographics_vocab": "demographics_vocab.json",
    "item_embeddings": "item_embeddings.npy",
    "fusion": "fusion.json",
    "golden": "golden.json",
    "drift_reference": "drift_reference.json",
}

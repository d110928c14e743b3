"""One forward pass per batch for the Python-based stand-ins: pad, stack, run once, split.

Triton's dynamic batcher hands the Python backend a list of requests, each keeping its own
tensors; with ``allow_ragged_batch`` on the variable-length inputs those requests may differ in
length. Running the model once per request would make a batch cost as much as its requests
(it did: 1.01 requests per execution bought nothing), so the requests are padded to the
longest one with the graphs' own padding (-1 for indices, 0 for values, which every graph
masks), stacked on the batch dimension, run once, and each response gets its own rows back.
An output whose length follows an input (a score per candidate) is cut back to that request's
length, named by the config parameter ``ragged_output_lengths`` ("OUTPUT:INPUT,...").

If the batched run fails, each request is run on its own, so one bad request fails alone.
This file is installed next to each stand-in's ``model.py`` by the launcher.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Arrays = list[np.ndarray]
Runner = Callable[[Arrays], Arrays]


class _DLPack:
    """Lets numpy consume the stub's DLPack capsule (np.from_dlpack wants an object, not a capsule)."""

    def __init__(self, tensor: object) -> None:
        self.tensor = tensor

    def __dlpack__(self, *, stream: object = None, **_: object) -> Any:  # the capsule, untyped
        return self.tensor.to_dlpack()  # type: ignore[attr-defined]

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)  # kDLCPU: inputs are requested in CPU memory


def read_inputs(pb_utils: object, request: object, names: Sequence[str]) -> Arrays:
    """A request's inputs as numpy arrays, through DLPack (``as_numpy`` misreads numpy 2 dtypes)."""
    return [np.from_dlpack(_DLPack(pb_utils.get_input_tensor_by_name(request, n))) for n in names]  # type: ignore[attr-defined]


def pad_value(array: np.ndarray) -> float:
    """The graphs' padding: -1 for an index, 0 for a value (both masked inside every graph)."""
    return -1 if np.issubdtype(array.dtype, np.integer) else 0


@dataclass(frozen=True)
class Batch:
    inputs: Arrays  # stacked, padded to the longest request
    rows: list[tuple[int, int]]  # each request's rows in the batch
    lengths: list[dict[str, int]]  # each request's own length of each input's last dimension


def stack(requests: Sequence[Arrays], names: Sequence[str]) -> Batch:
    rows, lengths, start = [], [], 0
    for arrays in requests:
        rows.append((start, start + arrays[0].shape[0]))
        lengths.append({n: a.shape[-1] if a.ndim > 1 else 1 for n, a in zip(names, arrays, strict=True)})
        start += arrays[0].shape[0]
    stacked = []
    for k in range(len(names)):
        parts = [arrays[k] for arrays in requests]
        width = max(p.shape[-1] for p in parts) if parts[0].ndim > 1 else None
        if width is not None and any(p.shape[-1] != width for p in parts):
            parts = [
                np.pad(p, [(0, 0)] * (p.ndim - 1) + [(0, width - p.shape[-1])], constant_values=pad_value(p))
                for p in parts
            ]
        stacked.append(np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0])
    return Batch(stacked, rows, lengths)


def ragged_outputs(config: dict) -> dict[str, str]:
    """``ragged_output_lengths`` from the model config: output name -> the input giving its length."""
    value = config.get("parameters", {}).get("ragged_output_lengths", {}).get("string_value", "")
    return dict(pair.split(":", 1) for pair in value.split(",") if ":" in pair)


def split(outputs: Arrays, names: Sequence[str], batch: Batch, ragged: dict[str, str]) -> list[Arrays]:
    """Each request's rows of every output; ragged outputs cut back to the request's own length."""
    per_request = []
    for (start, end), lengths in zip(batch.rows, batch.lengths, strict=True):
        own = []
        for name, value in zip(names, outputs, strict=True):
            part = value[start:end]
            if name in ragged:
                part = part[..., : lengths[ragged[name]]]
            own.append(np.ascontiguousarray(part))
        per_request.append(own)
    return per_request


def execute(
    requests: Sequence[Arrays | Exception],
    run: Runner,
    names: Sequence[str],
    outputs: Sequence[str],
    ragged: dict[str, str],
) -> list[Arrays | Exception]:
    """Every request's outputs or its own error: one batched run, per-request runs if that fails."""
    good = [i for i, r in enumerate(requests) if not isinstance(r, Exception)]
    results: list[Arrays | Exception] = list(requests)
    if not good:
        return results
    try:
        batch = stack([requests[i] for i in good], names)  # type: ignore[misc]
        for i, own in zip(good, split(run(batch.inputs), outputs, batch, ragged), strict=True):
            results[i] = own
        return results
    except Exception as err:  # some request broke the batch: run each alone to find it
        if len(good) == 1:
            results[good[0]] = err
            return results
    for i in good:
        try:
            single = stack([requests[i]], names)  # type: ignore[list-item]
            results[i] = split(run(single.inputs), outputs, single, ragged)[0]
        except Exception as err:  # the error goes back to that request only
            results[i] = err
    return results


def respond(
    pb_utils: Any,
    requests: Sequence[object],
    run: Runner,
    names: Sequence[str],
    outputs: Sequence[str],
    ragged: dict[str, str],
    tensor: Callable[[str, np.ndarray], object],
) -> list[object]:
    """A stand-in's ``execute``: read every request (one unreadable request fails alone), run them as
    one batch, and answer each with its outputs (``tensor`` wraps an array for Triton) or its error."""
    arrays: list[Arrays | Exception] = []
    for request in requests:
        try:
            arrays.append(read_inputs(pb_utils, request, names))
        except Exception as err:  # one unreadable request must not fail the others
            arrays.append(err)
    responses = []
    for result in execute(arrays, run, names, outputs, ragged):
        if isinstance(result, Exception):
            responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(result))))
        else:
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[tensor(name, value) for name, value in zip(outputs, result, strict=True)]
                )
            )
    return responses

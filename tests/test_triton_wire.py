"""The server's own Triton protobufs: the same bytes tritonclient sends, and Triton's answer read back."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc import InferInput, InferRequestedOutput, service_pb2
from tritonclient.grpc._utils import _get_inference_request

from server.triton_wire import first_rows, infer_request

INPUTS: dict[str, np.ndarray] = {
    "ITEM_IDX__0": np.array([[3, 1, 4]], dtype=np.int64),
    "RATING__1": np.array([[5.0, 3.5, 1.0]], dtype=np.float32),
    # A non-contiguous view: the bytes must still be the row-major values.
    "EXCLUDE_IDX__2": np.arange(8, dtype=np.int64).reshape(2, 4)[:, ::2][:1],
}
OUTPUTS = ("TOP_IDX__0", "TOP_SCORE__1")


def test_the_request_is_the_one_tritonclient_builds() -> None:
    tensors = []
    for name, array in INPUTS.items():
        tensor = InferInput(name, list(array.shape), "INT64" if array.dtype == np.int64 else "FP32")
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    expected = _get_inference_request(
        model_name="sae_torchscript_fp32",
        inputs=tensors,
        model_version="3",
        request_id="r1",
        outputs=[InferRequestedOutput(n) for n in OUTPUTS],
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=0,
        timeout=None,
        parameters=None,
    )
    assert infer_request("sae_torchscript_fp32", "3", INPUTS, OUTPUTS, "r1") == expected


def test_first_rows_reads_each_output_asked_for_by_name() -> None:
    response = service_pb2.ModelInferResponse(model_name="m", model_version="1")
    # Triton may answer outputs in any order, and more than were asked for.
    for name, array in (
        ("TOP_SCORE__1", np.array([[0.5, 0.25]], dtype=np.float32)),
        ("EXTRA__9", np.zeros((1, 1), dtype=np.float32)),
        ("TOP_IDX__0", np.array([[7, 2]], dtype=np.int64)),
    ):
        response.outputs.add(name=name, datatype="INT64" if array.dtype == np.int64 else "FP32", shape=array.shape)
        response.raw_output_contents.append(array.tobytes())
    rows = first_rows(response, OUTPUTS)
    assert list(rows) == list(OUTPUTS)
    assert rows["TOP_IDX__0"].tolist() == [7, 2] and rows["TOP_IDX__0"].dtype == np.int64
    assert rows["TOP_SCORE__1"].tolist() == [0.5, 0.25]
    with pytest.raises(KeyError):
        first_rows(response, ("USER_EMBEDDING__0",))

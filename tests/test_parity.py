from __future__ import annotations

import numpy as np
import pytest

from export.parity import FP32_TOLERANCE, QUANTIZED_MAX_NDCG_DROP, ParityError, abs_error, check

REF = [np.array([[3, 1]]), np.array([[0.5, -np.inf]], np.float32)]


def test_fp32_beyond_tolerance_fails_with_a_clear_message() -> None:
    off = [REF[0], REF[1] + np.float32(10 * FP32_TOLERANCE)]
    with pytest.raises(ParityError, match=r"sae onnx_fp32: max abs error .* exceeds 0\.0001"):
        check("sae", "onnx_fp32", False, REF, off, 0.3, 0.3)
    assert check("sae", "onnx_fp32", False, REF, REF, 0.3, 0.3).max_abs_err == 0.0


def test_quantized_variants_are_gated_on_ndcg_not_error() -> None:
    off = [REF[0], REF[1] + np.float32(0.01)]
    result = check("sae", "onnx_int8", True, REF, off, 0.30, 0.29)
    assert result.max_abs_err == pytest.approx(0.01, rel=1e-3) and result.ndcg10_delta == pytest.approx(-0.01)
    with pytest.raises(ParityError, match="NDCG@10 drops by"):
        check("sae", "onnx_int8", True, REF, off, 0.30, 0.30 - QUANTIZED_MAX_NDCG_DROP - 0.01)


def test_masked_slots_match_only_masked_slots() -> None:
    assert abs_error(np.array([-np.inf, 1.0]), np.array([-np.inf, 1.0])) == 0.0
    assert abs_error(np.array([-np.inf, 1.0]), np.array([2.0, 1.0])) == np.inf

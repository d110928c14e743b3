"""Serialise a graph into each variant: TorchScript (fp32, dynamic int8) and ONNX (fp32, int8, fp16)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
from recsys.contract import VARIANTS, Variant
from torch import nn

from export.graphs import FullRungGraph, signature

__all__ = ["VARIANTS", "Variant", "applicable", "runner", "write"]  # the table is the contract's
# Index plumbing stays fp32 in the fp16 variant: onnxruntime's CPU provider has no fp16
# ScatterElements(add), and top-k/gather over fp16 would only lose precision at no speed gain.
FP16_KEEP_FP32 = [*DEFAULT_OP_BLOCK_LIST, "ScatterElements", "TopK", "GatherElements", "Where"]


def example_inputs(graph: nn.Module, batch: int = 2, length: int = 3) -> tuple[torch.Tensor, ...]:
    """Small valid inputs for tracing; shapes are dynamic in the exported graphs."""
    tensors = []
    for name, dtype, dims in signature(graph)[0]:
        shape = (batch, *(length if d < 0 else d for d in dims))
        if dtype == "FP32":
            tensors.append(torch.full(shape, 4.0) if name.startswith("RATING") else torch.randn(shape))
        else:
            tensors.append(torch.arange(int(np.prod(shape)), dtype=torch.int64).reshape(shape) % 2)
    return tuple(tensors)


def has_linear(graph: nn.Module) -> bool:
    return any(isinstance(m, nn.Linear) for m in graph.modules())


def applicable(graph: nn.Module, variant: Variant) -> bool:
    """Dynamic int8 quantises Linear/MatMul weights; a graph without them gains nothing. The
    full-rung graph is TorchScript only (the variants the server's full rung runs by default)."""
    if isinstance(graph, FullRungGraph) and variant.format != "torchscript":
        return False
    return not (variant.name.endswith("int8") and not has_linear(graph))


def _torchscript(graph: nn.Module, path: Path, int8: bool) -> None:
    module = graph
    if int8:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao dynamic quantisation still works in 2.13
            module = torch.ao.quantization.quantize_dynamic(copy.deepcopy(graph), {nn.Linear}, dtype=torch.qint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, example_inputs(graph), check_trace=False)
    traced.save(str(path))


def _onnx(graph: nn.Module, path: Path) -> None:
    inputs, outputs = signature(graph)
    dynamic = {
        name: {0: "batch", **{i + 1: f"{name}_len" for i, d in enumerate(dims) if d < 0}}
        for name, _, dims in inputs + outputs
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            example_inputs(graph),
            str(path),
            input_names=[n for n, _, _ in inputs],
            output_names=[n for n, _, _ in outputs],
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )


def _drop_repeated_casts(model: onnx.ModelProto) -> onnx.ModelProto:
    """The fp16 converter inserts one cast per blocked consumer, so two blocked ops reading one
    tensor get two identical casts defining the same output, which onnxruntime rejects; keep one."""
    seen: set[str] = set()
    kept = []
    for node in model.graph.node:
        if node.op_type == "Cast" and node.output[0] in seen:
            continue
        seen.update(node.output)
        kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return model


def write(graph: nn.Module, variant: Variant, path: Path) -> Path:
    """Write ``graph`` as ``variant`` to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if variant.format == "torchscript":
        _torchscript(graph, path, int8=variant.name.endswith("int8"))
    elif variant.name == "onnx_fp32":
        _onnx(graph, path)
    else:
        fp32 = path.with_suffix(".fp32.onnx")
        _onnx(graph, fp32)
        if variant.name == "onnx_int8":
            quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8)
        else:  # fp16 weights and arithmetic; inputs and outputs stay fp32 so the contract does not change
            model = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True, op_block_list=FP16_KEEP_FP32)
            onnx.save(_drop_repeated_casts(model), str(path))
        fp32.unlink()
    return path


def runner(variant: Variant, path: Path) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
    """Run an exported file in-process, as the parity gate does (outputs in signature order)."""
    if variant.format == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return lambda feeds: session.run(names, feeds)
    module = torch.jit.load(str(path)).eval()

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            result = module(*(torch.from_numpy(v) for v in feeds.values()))
        return [t.numpy() for t in (result if isinstance(result, tuple) else (result,))]

    return run

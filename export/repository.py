"""Triton model-repository folders: ``config.pbtxt`` built as a ModelConfig protobuf, numbered versions."""

from __future__ import annotations

import shutil
from pathlib import Path

from google.protobuf import text_format
from torch import nn
from tritonclient.grpc import model_config_pb2 as mc

from export.formats import Variant
from export.graphs import ragged_lengths, signature

DATA_TYPES = {"INT64": mc.TYPE_INT64, "FP32": mc.TYPE_FP32}

# Measured on 2 cores (docs/export.md, "Batching"): with one instance per model, batches form by
# themselves under load (requests queue while the instance runs), so waiting for more only
# delays: 2 ms of delay doubled the p50 of a lone Recommend (three rounds of calls).
QUEUE_DELAY_US = 0


def model_config(
    name: str,
    graph: nn.Module,
    variant: Variant,
    *,
    max_batch_size: int = 32,
    queue_delay_us: int = QUEUE_DELAY_US,
    instances: int = 1,
    keep_versions: int = 2,
    ragged: bool = True,
) -> mc.ModelConfig:
    """``ragged``: requests of different lengths batch together, padded by the Python-based
    stand-ins of the embedded Triton. The NGC container's native backends would instead
    concatenate ragged inputs into one flat tensor the graphs do not take: export with
    ``ragged=False`` for them (``python -m export --no-ragged-batches``), where requests batch
    only when their lengths match."""
    config = mc.ModelConfig(
        name=name, backend=variant.backend, max_batch_size=max_batch_size, default_model_filename=variant.filename
    )
    inputs, outputs = signature(graph)
    for tensor_name, dtype, dims in inputs:
        config.input.add(
            name=tensor_name, data_type=DATA_TYPES[dtype], dims=dims, allow_ragged_batch=ragged and -1 in dims
        )
    for tensor_name, dtype, dims in outputs:
        config.output.add(name=tensor_name, data_type=DATA_TYPES[dtype], dims=dims)
    # An output whose length is that of an input (a score per candidate): the stand-ins cut each
    # request's rows of a padded batch back to that request's own length.
    ragged_outputs = [f"{o}:{i}" for o, i in ragged_lengths(graph).items()]
    if ragged_outputs:
        config.parameters["ragged_output_lengths"].string_value = ",".join(ragged_outputs)
    config.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    # No queue policy (max_queue_size, timeouts): with any, Triton 2.51's dynamic batcher left a
    # batch of requests queued for its 500 ms idle wait (tests/test_export.py). Every form we tried
    # stalls. rbm_torchscript_fp32, 40 bursts of 8 concurrent requests, 3 repeats, bursts >= 400 ms
    # (a burst otherwise takes 7-40 ms); every queue-policy configuration stalled at least once:
    #   default_queue_policy {max_queue_size: 64}                       19, 14, 31
    #   ... + timeout_action: DELAY                                     17, 23, 21
    #   ... {default_timeout_microseconds: 2 s, allow_timeout_override}  26, 18 (2 repeats)
    #   priority_levels: 1 + priority_queue_policy {1: max_queue_size 64} 17, 26, 5
    #   priority_levels: 2, no policy at all                            4, 30 (2 repeats)
    #   preferred_batch_size: [8] + max_queue_size 64                   19, 19, 19
    #   max_queue_delay_microseconds: 100 + max_queue_size 64           7, 8, 4
    #   2 instances + max_queue_size 64                                 0, 0, 1, 0, 0 (bursts of 8);
    #                                                                   0, 2, 0 (bursts of 24)
    #   this config (no policy, 1 instance)                            0 in all 8 runs above
    # So Triton's queue is bounded by our server instead, its only caller (the control plane is
    # locked): per-model in-flight limits (server/admission.py) shed before Triton queues, and each
    # call carries its remaining budget as its gRPC deadline, which Triton honours while queued.
    # KIND_AUTO: on the GPU in the NGC container when one is present, on the CPU here; a
    # CPU-only variant is pinned to the CPU so a GPU machine never tries to run it there.
    kind = mc.ModelInstanceGroup.KIND_CPU if variant.cpu_only else mc.ModelInstanceGroup.KIND_AUTO
    config.instance_group.add(kind=kind, count=instances)
    config.version_policy.latest.num_versions = keep_versions
    warmup = config.model_warmup.add(name="zeros", batch_size=1)
    for tensor_name, dtype, dims in inputs:
        warmup.inputs[tensor_name].data_type = DATA_TYPES[dtype]
        warmup.inputs[tensor_name].dims.extend([1 if d < 0 else d for d in dims])
        warmup.inputs[tensor_name].zero_data = True
    return config


def versions(folder: Path) -> list[int]:
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()) if folder.is_dir() else []


def write_model(repository: Path, config: mc.ModelConfig, artifact: Path, keep_versions: int = 2) -> int:
    """Add ``artifact`` as the next version of the model; drop versions beyond ``keep_versions``."""
    folder = repository / config.name
    version = (versions(folder) or [0])[-1] + 1
    target = folder / str(version)
    target.mkdir(parents=True)
    shutil.copy2(artifact, target / config.default_model_filename)
    (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
    for old in versions(folder)[:-keep_versions]:
        shutil.rmtree(folder / str(old))
    return version


def read_config(folder: Path) -> mc.ModelConfig:
    return text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())


def copy_with_batching(repository: Path, target: Path, queue_delay_us: int | None) -> Path:
    """A copy of ``repository`` whose models batch with ``queue_delay_us`` of queueing, or, with
    None, not at all (no dynamic batcher: Triton runs one request per execution)."""
    shutil.copytree(repository, target, symlinks=True)
    for config_file in target.glob("*/config.pbtxt"):
        config = read_config(config_file.parent)
        if queue_delay_us is None:
            config.ClearField("dynamic_batching")
        else:
            config.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
        config_file.write_text(text_format.MessageToString(config))
    return target

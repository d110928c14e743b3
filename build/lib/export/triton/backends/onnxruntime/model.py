"""A Python-based stand-in for Triton's native ``onnxruntime`` backend in the embedded Triton.

The NGC container serves ``backend: "onnxruntime"`` models natively; the nvidia-pytriton wheel
has no such backend, so this file, installed as ``<backend-dir>/onnxruntime/model.py``, serves
the same model folders unchanged. CUDA is used only for GPU instances when onnxruntime has it.

Tensors cross the stub boundary through DLPack, never ``as_numpy()``/``Tensor(name, ndarray)``:
the wheel's stub is built against numpy 1.x, and with numpy 2 (whose dtype struct layout
changed) those calls read item sizes wrongly, giving all-zero inputs and empty outputs.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class _DLPack:
    """Lets numpy consume the stub's DLPack capsule (np.from_dlpack wants an object, not a capsule)."""

    def __init__(self, tensor):
        self.tensor = tensor

    def __dlpack__(self, **_):
        return self.tensor.to_dlpack()

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU: inputs are requested in CPU memory


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        filename = config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        wanted = ["CPUExecutionProvider"]
        if args.get("model_instance_kind") == "GPU":  # CUDA only for GPU instances, and only if built in
            wanted.insert(0, "CUDAExecutionProvider")
        providers = [p for p in wanted if p in ort.get_available_providers()]
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("RECSYS_ORT_THREADS", "1"))
        self.session = ort.InferenceSession(path, options, providers=providers)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o["name"] for o in config["output"]]
        self.output_types = {o["name"]: pb_utils.triton_string_to_numpy(o["data_type"]) for o in config["output"]}
        self.logger = pb_utils.Logger
        self.logger.log_info(f"onnxruntime shim loaded {path} providers={self.session.get_providers()}")

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                feeds = {name: np.from_dlpack(_DLPack(pb_utils.get_input_tensor_by_name(request, name)))
                         for name in self.inputs}
                results = self.session.run(self.outputs, feeds)
                tensors = [pb_utils.Tensor.from_dlpack(name, np.ascontiguousarray(value, dtype=self.output_types[name]))
                           for name, value in zip(self.outputs, results, strict=True)]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as err:  # one failing request must not fail the others
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err))))
        return responses

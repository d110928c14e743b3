"""A Python-based stand-in for Triton's native ``onnxruntime`` backend in the embedded Triton.

The NGC container serves ``backend: "onnxruntime"`` models natively; the nvidia-pytriton wheel
has no such backend, so this file, installed as ``<backend-dir>/onnxruntime/model.py``, serves
the same model folders unchanged. CUDA is used only for GPU instances when onnxruntime has it.

Tensors cross the stub boundary through DLPack, never ``as_numpy()``/``Tensor(name, ndarray)``:
the wheel's stub is built against numpy 1.x, and with numpy 2 (whose dtype struct layout
changed) those calls read item sizes wrongly, giving all-zero inputs and empty outputs.
A batch of requests is one session run (``batching.py``, installed beside this file).
"""

import json
import os
import sys

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import batching  # installed beside this file by the launcher


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
        self.output_types = [pb_utils.triton_string_to_numpy(o["data_type"]) for o in config["output"]]
        self.ragged = batching.ragged_outputs(config)
        pb_utils.Logger.log_info(f"onnxruntime shim loaded {path} providers={self.session.get_providers()}")

    def _run(self, arrays):
        results = self.session.run(self.outputs, dict(zip(self.inputs, arrays, strict=True)))
        return [np.asarray(r, dtype=t) for r, t in zip(results, self.output_types, strict=True)]

    def execute(self, requests):
        return batching.respond(
            pb_utils,
            requests,
            self._run,
            self.inputs,
            self.outputs,
            self.ragged,
            lambda name, value: pb_utils.Tensor.from_dlpack(name, value),
        )

"""A Python-based stand-in for Triton's native ``pytorch`` (libtorch) backend in the embedded Triton.

Serves TorchScript ``model.pt`` folders written for the NGC container unchanged. Inputs are
passed positionally in the config's order, as libtorch does; outputs are the returned tensor
or tuple in the config's output order. CUDA is used for GPU instances.

A batch of requests is one forward pass (``batching.py``, installed beside this file): the
libtorch backend also runs a batch at once, and per-request passes made batching worthless.
"""

import json
import os
import sys

import torch
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import batching  # installed beside this file by the launcher


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        filename = config.get("default_model_filename") or "model.pt"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        torch.set_num_threads(int(os.environ.get("RECSYS_TORCH_THREADS", "1")))
        # Follow the instance kind Triton chose (KIND_CPU pins CPU-only variants such as dynamic int8).
        on_gpu = args.get("model_instance_kind") == "GPU" and torch.cuda.is_available()
        self.device = torch.device(f"cuda:{args.get('model_instance_device_id', '0')}" if on_gpu else "cpu")
        self.model = torch.jit.load(path, map_location=self.device).eval()
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        self.ragged = batching.ragged_outputs(config)
        pb_utils.Logger.log_info(f"pytorch shim loaded {path} device={self.device}")

    def _run(self, arrays):
        with torch.inference_mode():
            result = self.model(*(torch.from_numpy(a).to(self.device) for a in arrays))
        values = result if isinstance(result, (tuple, list)) else (result,)
        return [v.detach().cpu().numpy() for v in values]

    def execute(self, requests):
        return batching.respond(
            pb_utils,
            requests,
            self._run,
            self.inputs,
            self.outputs,
            self.ragged,
            lambda name, value: pb_utils.Tensor.from_dlpack(name, torch.from_numpy(value)),
        )

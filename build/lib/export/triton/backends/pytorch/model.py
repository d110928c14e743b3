"""A Python-based stand-in for Triton's native ``pytorch`` (libtorch) backend in the embedded Triton.

Serves TorchScript ``model.pt`` folders written for the NGC container unchanged. Inputs are
passed positionally in the config's order, as libtorch does; outputs are the returned tensor
or tuple in the config's output order. CUDA is used for GPU instances.

Tensors cross the stub boundary through DLPack (see the onnxruntime stand-in for why).
"""

import json
import os

import torch
import triton_python_backend_utils as pb_utils


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
        pb_utils.Logger.log_info(f"pytorch shim loaded {path} device={self.device}")

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                args = [torch.utils.dlpack.from_dlpack(pb_utils.get_input_tensor_by_name(request, name).to_dlpack())
                        .to(self.device) for name in self.inputs]
                with torch.inference_mode():
                    result = self.model(*args)
                values = result if isinstance(result, (tuple, list)) else (result,)
                tensors = [pb_utils.Tensor.from_dlpack(name, value.detach().cpu().contiguous())
                           for name, value in zip(self.outputs, values, strict=True)]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as err:  # one failing request must not fail the others
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err))))
        return responses

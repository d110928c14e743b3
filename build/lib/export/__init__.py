"""Export of registered models to TorchScript/ONNX and a Triton model repository (issue #3)."""

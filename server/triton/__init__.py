"""The embedded Triton: the real ``tritonserver`` binary from the nvidia-pytriton wheel, run locally."""

from server.triton.launcher import EmbeddedTriton, ModelLoadError, TritonNotFound, TritonStartError

__all__ = ["EmbeddedTriton", "ModelLoadError", "TritonNotFound", "TritonStartError"]

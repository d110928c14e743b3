"""The asyncio gRPC recommendation server in front of Triton (issue #4)."""

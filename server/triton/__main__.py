"""Run the embedded Triton in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
from pathlib import Path

from server.triton.launcher import EmbeddedTriton, Ports


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a model repository with the embedded tritonserver.")
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--load", nargs="*", default=["all"], help="model names, or 'all' (every folder)")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    models = args.load
    if models == ["all"]:
        models = sorted(p.name for p in args.model_repository.iterdir() if (p / "config.pbtxt").is_file())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedTriton(
        args.model_repository,
        models=tuple(models),
        verbose=args.verbose,
        ports=Ports(args.grpc_port, args.http_port, args.metrics_port),
    ) as triton:
        print(f"Triton ready: grpc {triton.grpc_url}, metrics {triton.metrics_url}, models {', '.join(models)}")
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: leave the block, which stops Triton
            stop.wait()


if __name__ == "__main__":
    main()

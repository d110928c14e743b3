"""``python -m server``: the embedded Triton (unless ``--triton-url`` names one) and the gRPC server.

Ctrl-C or SIGTERM: health goes NOT_SERVING, in-flight calls drain (``shutdown_grace_s``), then
the server and Triton stop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import NoReturn

from threadpoolctl import threadpool_limits

from server.app import create_server
from server.bundle import BundleError
from server.logs import configure
from server.settings import Settings, SettingsError, load_settings
from server.store import StoreError
from server.triton import EmbeddedTriton, TritonNotFound, TritonStartError

log = logging.getLogger("server")


async def serve(settings: Settings) -> None:
    triton = None
    if settings.triton_url is None:
        if not settings.embedded_triton:
            raise SettingsError("no --triton-url and --embedded-triton false: nothing to serve the models")
        # Supervised: a Triton that dies is restarted (the server reloads its models by itself).
        triton = EmbeddedTriton(settings.model_repository, startup_timeout=120, supervise=True).start()
        settings = settings.model_copy(update={"triton_url": triton.grpc_url, "triton_control_key": triton.control_key})
    try:
        server, port = create_server(settings)
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        metrics = f"http://{settings.host}:{server.metrics_port}/metrics" if server.metrics_port else "off"
        print(
            f"\nrecommendation server on {settings.host}:{port} (Triton {settings.triton_url}; metrics {metrics})\n"
            f"  try: .venv/bin/python -m clients --target {settings.host}:{port} recommend --user 42 -k 10\n"
            f"       .venv/bin/python -m clients --target {settings.host}:{port} models\n"
            "  Ctrl-C stops the server and Triton.\n",
            flush=True,
        )
        await stop.wait()
        log.info("shutting down")
        await server.stop()
    finally:
        if triton is not None:
            triton.stop()


# A user error (a setting, a missing or stale bundle) exits 2, as argparse does for a bad flag;
# the machinery failing (Triton, the store, a port) exits 1. Either way one line, no traceback.
USAGE_ERROR = 2


def _fail(err: Exception, code: int) -> NoReturn:
    print(f"server: {err}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    try:
        settings = load_settings(argv)
    except SettingsError as err:
        _fail(err, USAGE_ERROR)
    configure(settings.log_json, settings.log_level)
    # A whole-process setting, so it is made here and not in create_server (tests host servers in
    # their own process). Numpy's BLAS threads only spin on this server's small per-request
    # vectors, taking cores from Triton: at 60k items they cost 0.8 core and starved it.
    threadpool_limits(settings.blas_threads, user_api="blas")
    try:
        asyncio.run(serve(settings))
    except (BundleError, SettingsError) as err:
        _fail(err, USAGE_ERROR)
    except (StoreError, OSError, TritonNotFound, TritonStartError) as err:
        _fail(err, 1)


if __name__ == "__main__":
    main()

"""``make bench-security``: the abuse corpus and the auth matrix against real servers -> reports/security.json.

    python -m loadtest.benches.security [--bundle DIR --model-repository DIR]   (any server setting)

Starts the embedded Triton (supervised) on the configured repository and two servers on
loopback: one in dev mode for the abuse corpus (so every case reaches validation), one with TLS +
mTLS + tokens for the auth matrix. Every row of the corpus is {case, expected, code, ms}; the
matrix rows {case, expected, got}. Last, Triton is SIGKILLed under load (``triton_kill``: requests,
failures, degraded answers, readiness probes not SERVING, seconds until answers are whole again).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from loadtest.benches.abuse import Case, abuse_corpus
from loadtest.benches.authmatrix import AuthMaterial, auth_matrix
from loadtest.benches.killtest import kill_under_load
from server.app import create_server
from server.paths import REPORTS
from server.settings import load_settings
from server.triton import EmbeddedTriton

REPORT = REPORTS / "security.json"
BURST_CALLERS = 16


def _send(call: grpc.UnaryUnaryMultiCallable, case: Case, timeout_s: float) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        call(case.payload, timeout=timeout_s, metadata=case.metadata or None)
        code = "OK"
    except grpc.RpcError as err:
        code = err.code().name
    return code, (time.perf_counter() - started) * 1000


def run_corpus(target: str, cases: list[Case], timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """One row per case; a burst is sent from ``BURST_CALLERS`` threads at once and its row holds the
    slowest call and a code other than the expected one if any call got one."""
    rows = []
    with grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 16 << 20)]) as channel:
        for case in cases:
            # No (de)serializers: raw bytes in, raw bytes out.
            call = channel.unary_unary(case.method, request_serializer=None, response_deserializer=None)
            n = case.burst
            with ThreadPoolExecutor(min(n, BURST_CALLERS)) as pool:
                results = list(pool.map(_send, [call] * n, [case] * n, [timeout_s] * n))
            wrong = sorted({code for code, _ in results} - {case.expected})
            row: dict[str, Any] = {
                "case": case.name,
                "expected": case.expected,
                "code": wrong[0] if wrong else case.expected,
            }
            row |= {"ms": round(max(ms for _, ms in results), 2), "within_ms": case.within_ms}
            rows.append(row | ({"calls": n} if n > 1 else {}))
    return rows


async def bench(argv: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="recsys-security-") as tmp:
        # No admin port: two servers here, and the default one may be taken by a server already running.
        # No response cache: the kill test asks for the same user over and over, and cached answers
        # would hide what Triton's absence does.
        base = load_settings(
            argv,
            grpc_port=0,
            metrics_port=None,
            host="127.0.0.1",
            admin_port=None,
            cache_ttl_s=0,
            feedback_db=Path(tmp) / "feedback.sqlite",
        )
        material = AuthMaterial(Path(tmp))
        with EmbeddedTriton(base.model_repository, startup_timeout=180, supervise=True) as triton:
            dev_settings = base.model_copy(update={"triton_url": triton.grpc_url, "auth_mode": "dev"})
            secure_settings = dev_settings.model_copy(update={**material.settings(), "rate_limit_rps": 1000})
            dev, _ = create_server(dev_settings)
            secure, _ = create_server(secure_settings)
            await dev.start()
            await secure.start()
            try:
                cases = abuse_corpus(dev.bundle, dev_settings)
                await asyncio.to_thread(run_corpus, f"127.0.0.1:{dev.port}", cases)  # warm: first calls load models
                corpus = await asyncio.to_thread(run_corpus, f"127.0.0.1:{dev.port}", cases)
                users = sorted(dev.bundle.user_index)
                matrix = await asyncio.to_thread(auth_matrix, material, f"127.0.0.1:{secure.port}", users[0], users[1])
                # The user with the most ratings: the full ensemble (every model) answers for them, so
                # answers without Triton are degraded. (A user without history gets popularity, never degraded.)
                rated = np.diff(dev.bundle.histories.indptr)
                heavy = next(u for u, i in dev.bundle.user_index.items() if i == int(np.argmax(rated)))
                kill = await asyncio.to_thread(
                    kill_under_load, f"127.0.0.1:{dev.port}", triton, heavy, workers=3, recover_within_s=300
                )
            finally:
                await dev.stop(1.0)
                await secure.stop(1.0)
    bad = [r for r in corpus if r["expected"] != "OK"]
    return {
        "catalog_size": dev.bundle.n_items,
        "bundle": str(dev.bundle.folder),
        "max_message_bytes": dev_settings.max_message_bytes,
        "worst_bad_request_ms": max(r["ms"] for r in bad),
        # Without the oversized-metadata cases, which gRPC's transport refuses before any handler
        # (loadtest/benches/amplification.py).
        "worst_bad_request_handled_ms": max(r["ms"] for r in bad if r["within_ms"] <= 500),
        "over_their_bar": [r["case"] for r in corpus if r["ms"] >= r["within_ms"]],
        "worst_request_ms": max(r["ms"] for r in corpus),
        "corpus_mismatches": [r["case"] for r in corpus if r["code"] != r["expected"]],
        "matrix_mismatches": [r["case"] for r in matrix if r["got"] != r["expected"]],
        "triton_kill": kill,
        "abuse": corpus,
        "auth_matrix": matrix,
    }


def main(argv: list[str] | None = None) -> int:
    report = asyncio.run(bench(sys.argv[1:] if argv is None else argv))
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k not in ("abuse", "auth_matrix")}, indent=2))
    print(f"wrote {REPORT}")
    return 1 if report["corpus_mismatches"] or report["matrix_mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())

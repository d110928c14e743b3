"""``python -m clients rollout ...``: drive the admin service (``recsys.admin.v1``) from a shell.

    python -m clients rollout start serving_bundle          # load, warm up, check, then shadow
    python -m clients rollout get
    python -m clients rollout promote [--stage canary --canary-percent 10]
    python -m clients rollout rollback --reason "p99 up"
    python -m clients rollout ship serving_bundle --shadow-s 30 --canary-s 30   # every stage, watched

Exit code 0 on success, 1 when refused or rolled back (the reason is printed).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from recsys.admin.v1 import admin_pb2 as apb

from clients.admin import RolloutAdminClient, ship
from clients.cli_output import fail, show
from clients.credentials import Credentials
from clients.errors import RecsysError


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rollout = commands.add_parser("rollout", help="ship a serving bundle to the running server (admin service)")
    rollout.add_argument("--admin", default="127.0.0.1:50052", help="admin service address (default %(default)s)")
    steps = rollout.add_subparsers(dest="step", required=True)
    start = steps.add_parser("start", help="load a bundle beside the live one and start its shadow stage")
    start.add_argument("bundle", help="a bundle folder (serving_bundle/N) or its parent (the newest version)")
    steps.add_parser("get", help="the rollout's stage, guardrail figures and history")
    promote = steps.add_parser("promote", help="the next stage: canary, full, retire")
    promote.add_argument("--stage", default="", choices=["", "canary", "full", "retire"])
    promote.add_argument("--canary-percent", type=float, default=0.0)
    back = steps.add_parser("rollback", help="back to the promoted bundle")
    back.add_argument("--reason", default="operator request")
    whole = steps.add_parser("ship", help="start, then shadow -> canary -> full -> retire, holding each stage")
    whole.add_argument("bundle")
    whole.add_argument("--shadow-s", type=float, default=30.0)
    whole.add_argument("--canary-s", type=float, default=30.0)
    whole.add_argument("--canary-percent", type=float, default=10.0)


def describe(state: apb.Rollout) -> str:
    lines = [
        f"stage {state.stage}, promoted bundle {state.promoted_bundle}"
        + (f", candidate {state.candidate_bundle}" if state.candidate_bundle else "")
        + (f" ({state.canary_percent:g}% of users)" if state.stage == "canary" else "")
    ]
    if state.outcome:
        lines.append(f"last rollout: {state.outcome}")
    if state.candidate_bundle:
        lines.append(
            f"guardrails: live {state.live.answers} answers p99 {state.live.p99_ms:.1f} ms, candidate "
            f"{state.candidate.answers} answers p99 {state.candidate.p99_ms:.1f} ms, errors "
            f"{state.candidate.error_rate:.1%}, top-10 overlap {state.top10_overlap:.2f} "
            f"over {state.compared}"
        )
    lines += [
        f"  {time.strftime('%H:%M:%S', time.localtime(e.at))} #{e.rollout_id} {e.stage:<7} {e.message}"
        for e in state.events[-8:]
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace, credentials: Credentials | None = None) -> int:
    if getattr(args, "bundle", None) and Path(args.bundle).exists():
        args.bundle = str(Path(args.bundle).resolve())  # the server resolves paths from its own folder
    with RolloutAdminClient(args.admin, credentials=credentials) as admin:
        try:
            if args.step == "start":
                state = admin.start(args.bundle)
            elif args.step == "get":
                state = admin.get()
            elif args.step == "promote":
                state = admin.promote(args.stage, args.canary_percent)
            elif args.step == "rollback":
                state = admin.rollback(args.reason)
            else:
                state = ship(
                    admin,
                    args.bundle,
                    shadow_s=args.shadow_s,
                    canary_s=args.canary_s,
                    canary_percent=args.canary_percent,
                    # With --json, stdout holds only the final state; the progress goes to stderr.
                    print_=lambda line: print(line, file=sys.stderr if args.json else sys.stdout),
                )
        except RecsysError as err:
            fail(args.json, err.message, err.code.name, err.request_id)
            return 1
    show(args.json, state, lambda: describe(state))
    return 0

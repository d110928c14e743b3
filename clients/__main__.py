"""``python -m clients``: call the recommendation server from a shell and print a readable table.

python -m clients recommend --user 42 -k 10 --explain
python -m clients recommend --rate 1=5 --rate 50=4 -k 5
python -m clients similar 1 -k 5
python -m clients onboarding -k 12
python -m clients feedback --user new-7 --rate 1=5 --click 50
python -m clients models
python -m clients --json models                    # any command: the typed result as JSON
python -m clients rollout ship serving_bundle       # the admin service: see clients/rollout_cli.py
"""

from __future__ import annotations

import argparse
import os
import sys

from clients import rollout_cli
from clients.api import STRATEGIES, VARIANTS
from clients.cli_output import fail, show
from clients.credentials import Credentials
from clients.errors import RecsysError
from clients.results import Item, Models, Recommendations
from clients.sync import RecommenderClient

# argparse's status for a bad command line; the server refusing a call (or being down) is 1.
USAGE_ERROR = 2


def _pairs(values: list[str]) -> dict[int, float]:
    out = {}
    for value in values:
        item, _, rating = value.partition("=")
        try:
            out[int(item)] = float(rating)
        except ValueError:
            raise ValueError(f"--rate {value!r}: expected ITEM=RATING, e.g. 50=4") from None
    return out


def _table(items: list[Item], explain: bool = False) -> str:
    width = max([len(i.title) for i in items] + [5])
    lines = [f"{'#':>3}  {'item':>6}  {'title':<{width}}  {'score':>9}  genres"]
    for rank, item in enumerate(items, 1):
        genres = ", ".join(item.genres)
        lines.append(f"{rank:>3}  {item.item_id:>6}  {item.title:<{width}}  {item.score:>9.4f}  {genres}")
        if explain and item.reasons:
            lines.append(f"{'':>13}{'; '.join(item.reasons)}")
    return "\n".join(lines)


def _summary(result: Recommendations) -> str:
    calls = ", ".join(f"{c.model} {c.ms:.1f} ms" + ("" if c.ok else f" ({c.error})") for c in result.model_calls)
    text = (
        f"strategy {result.strategy}, rung {result.rung}, plan {result.plan}, budget {result.budget_ms} ms, "
        f"total {result.timings_ms.get('total', 0):.1f} ms, history {result.history_size} ratings, "
        f"request {result.request_id}\nmodels: {calls or 'none'}"
    )
    if result.degraded:
        text += "\nDEGRADED: " + "; ".join(result.degraded_reasons)
    if result.unknown_item_ids:
        text += f"\nunknown item ids (ignored): {result.unknown_item_ids}"
    return text


def _models(models: Models) -> str:
    lines = [
        f"bundle {models.bundle_version} ({models.dataset}, {models.catalog_size} items), "
        f"Triton {'up' if models.triton_ready else 'DOWN'}, fusion {models.fusion_method} {models.fusion_weights}"
    ]
    lines += [
        f"  {m.name:<36} {'ready' if m.ready else 'NOT READY':<9} versions {','.join(m.versions):<5}"
        f" p95 {m.p95_ms:6.2f} ms  calls {m.calls}"
        for m in models.models
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients", description=__doc__.split("\n")[0])
    parser.add_argument("--target", default="127.0.0.1:50051", help="server address (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=5.0, help="deadline per call, seconds")
    parser.add_argument(
        "--token",
        default=os.environ.get("RECSYS_TOKEN"),
        help="bearer token (default: $RECSYS_TOKEN); not needed by a dev-mode server",
    )
    parser.add_argument(
        "--json", action="store_true", help="print each result (or error) as one JSON document instead of a table"
    )
    parser.add_argument("--tls-roots", help="PEM CA bundle: connect with TLS, trusting these roots")
    parser.add_argument("--tls-cert", help="PEM client certificate (mTLS)")
    parser.add_argument("--tls-key", help="PEM key of the client certificate")
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("recommend", help="recommendations for a user and/or inline ratings")
    rec.add_argument("--user", default=None)
    rec.add_argument("-k", type=int, default=10)
    rec.add_argument("--rate", action="append", default=[], metavar="ITEM=RATING")
    rec.add_argument("--strategy", default="ensemble", choices=list(STRATEGIES))
    rec.add_argument("--variant", default="auto", choices=list(VARIANTS))
    rec.add_argument("--budget-ms", type=int, default=0)
    rec.add_argument("--genre", action="append", default=[])
    rec.add_argument("--exclude", type=int, action="append", default=[])
    rec.add_argument("--diversity", type=float, default=0.0)
    rec.add_argument("--explain", action="store_true")
    sim = commands.add_parser("similar", help="items like one item")
    sim.add_argument("item", type=int)
    sim.add_argument("-k", type=int, default=10)
    onb = commands.add_parser("onboarding", help="popular, varied items for a new user to rate")
    onb.add_argument("-k", type=int, default=12)
    onb.add_argument("--genre", action="append", default=[])
    fb = commands.add_parser("feedback", help="record ratings and clicks")
    fb.add_argument("--user", required=True)
    fb.add_argument("--rate", action="append", default=[], metavar="ITEM=RATING")
    fb.add_argument("--click", type=int, action="append", default=[])
    commands.add_parser("models", help="loaded models, versions, latency estimates")
    commands.add_parser("health", help="grpc.health.v1 status; exit code 0 only when SERVING")
    rollout_cli.add_parser(commands)
    args = parser.parse_args(argv)
    try:
        credentials = Credentials.from_files(
            token=args.token, roots=args.tls_roots, cert=args.tls_cert, key=args.tls_key
        )
    except (OSError, ValueError) as err:  # a certificate file missing or unreadable
        fail(args.json, str(err))
        return USAGE_ERROR
    if args.command == "rollout":
        return rollout_cli.run(args, credentials)

    with RecommenderClient(args.target, timeout=args.timeout, credentials=credentials) as client:
        try:
            if args.command == "recommend":
                result = client.recommend(
                    args.user,
                    k=args.k,
                    ratings=_pairs(args.rate),
                    strategy=args.strategy,
                    variant=args.variant,
                    budget_ms=args.budget_ms,
                    genres=args.genre,
                    exclude=args.exclude,
                    diversity=args.diversity,
                    explain=args.explain,
                )
                show(args.json, result, lambda: f"{_table(result.items, args.explain)}\n{_summary(result)}")
            elif args.command == "similar":
                similar = client.similar_items(args.item, k=args.k)
                show(args.json, similar, lambda: f"like {similar.item.title}:\n{_table(similar.items)}")
            elif args.command == "onboarding":
                onboarding = client.onboarding_items(k=args.k, genres=args.genre)
                show(args.json, onboarding, lambda: _table(onboarding.items))
            elif args.command == "feedback":
                receipt = client.record_feedback(args.user, ratings=_pairs(args.rate), clicks=args.click)
                show(
                    args.json,
                    receipt,
                    lambda: (
                        f"stored {receipt.new_events} new events ({receipt.duplicates} already "
                        f"stored); {args.user} now has {receipt.profile_size} ratings"
                    ),
                )
            elif args.command == "models":
                models = client.list_models()
                show(args.json, models, lambda: _models(models))
            else:
                status = client.health()
                show(args.json, {"status": status}, lambda: status)
                return 0 if status == "SERVING" else 1  # usable as a container health check
        except RecsysError as err:
            fail(args.json, err.message, err.code.name, err.request_id)
            return 1
        except ValueError as err:  # a bad --rate, or the SDK refused an argument before sending anything
            fail(args.json, str(err))
            return USAGE_ERROR
    return 0


def cli() -> None:
    """The ``recsys-client`` console script."""
    sys.exit(main())


if __name__ == "__main__":
    cli()

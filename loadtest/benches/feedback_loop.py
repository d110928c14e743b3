"""``make bench-feedback-loop``: the whole loop on ml-100k, measured; writes reports/feedback_loop.json.

1. base models: train on u1.base, export (repository + bundle with its drift reference);
2. Valkey (AOF always), one embedded Triton, two server replicas sharing the store;
3. replay u1.test as feedback through one SDK client over both replicas (round robin), each
   user's last rating held back, 10% of the calls retried with the same event ids;
4. check that feedback recorded on replica A changes replica B's next answer; one Recommend per
   replayed user, then PSI scraped from both replicas (in distribution); Zipf traffic with some
   users asking twice measures the response cache;
5. retrain from the store, gate and export (training.retrain); the gate's NDCG@10 of both
   ensembles on the held-back last ratings is the before/after figure;
6. roll out live: the new bundle is shipped through replica 0's admin service (shadow, canary
   10%, full, retire, each held ``--stage-s`` with Recommend traffic over both replicas); replica 1
   follows the shared rollout pointer; both drift monitors switch to the new bundle's reference.
   A shifted stream (Horror ratings only, then new users who disliked long-tail items asking for
   recommendations) is then sent and the PSI scraped again.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from clients.retry import NO_RETRY
from clients.sync import RecommenderClient
from loadtest.benches.feedback_loop_parts import cache_probe, replay, roll_out, start_replicas, stop_replicas
from server.paths import DEFAULT_DATA, REPORTS, STATE
from server.store import open_store
from server.store.valkey_server import ValkeyServer
from server.triton import EmbeddedTriton
from training.data import load_movielens
from training.data.readers import read_ratings_file

log = logging.getLogger("bench_feedback_loop")


def _max_psi(replicas: list[Any]) -> tuple[float, dict[str, float]]:
    per_feature: dict[str, float] = {}
    for replica in replicas:
        for feature, value in replica.psi().items():
            per_feature[feature] = max(per_feature.get(feature, 0.0), value)
    return (max(per_feature.values()) if per_feature else float("nan")), per_feature


def cross_replica(replicas: list[Any], items: list[int]) -> bool:
    a, b = replicas
    with RecommenderClient(a.target, retry=NO_RETRY) as on_a, RecommenderClient(b.target, retry=NO_RETRY) as on_b:
        before = on_b.recommend("bench-cross-replica", k=10)
        on_a.record_feedback("bench-cross-replica", ratings={i: 5.0 for i in items[:3]})
        after = on_b.recommend("bench-cross-replica", k=10)
    return (before.profile_version, after.profile_version) == (0, 3) and [i.item_id for i in before.items] != [
        i.item_id for i in after.items
    ]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=STATE / "bench_feedback_loop")
    parser.add_argument("--cache-calls", type=int, default=2000)
    parser.add_argument("--stage-s", type=float, default=10.0, help="seconds each rollout stage is held")
    parser.add_argument("--train-arg", action="append", default=[], help="passed to every training run")
    parser.add_argument("--out", type=Path, default=REPORTS / "feedback_loop.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from export.__main__ import main as export_main
    from training import retrain, train

    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    state, repo, bundle = work / "state", work / "model_repository", work / "serving_bundle"
    train.main(["--data", str(args.data), "--state-dir", str(state), "--no-progress", *args.train_arg])
    export_main(["--state-dir", str(state), "--out", str(repo), "--bundle", str(bundle)])
    dataset = load_movielens(args.data)
    test = read_ratings_file(args.data / "u1.test", "ml-100k")
    horror = dataset.genres[:, dataset.genre_names.index("Horror")] == 1
    horror_items = set(dataset.item_ids.raw_ids[horror].tolist())
    counts = np.bincount(dataset.ratings["item"].to_numpy(), minlength=dataset.n_items)
    long_tail = np.argsort(-counts, kind="stable")[dataset.n_items // 2 :]  # the less rated half of the catalogue
    details: dict[str, Any] = {}
    with ValkeyServer(work / "valkey") as valkey, EmbeddedTriton(repo, startup_timeout=180) as triton:
        replicas = start_replicas(triton.grpc_url, work, valkey.url, bundle, repo)
        try:
            with RecommenderClient([r.target for r in replicas], timeout=10) as client:
                sent = replay(client, test, "u1test")
                details["feedback_calls_per_replica"] = [r.requests("RecordFeedback") for r in replicas]
                ok = cross_replica(replicas, [int(i) for i in sorted(horror_items)])
                for user in test["user"].unique():
                    client.recommend(str(user), k=10)
                in_psi, details["in_distribution_psi"] = _max_psi(replicas)
                cache = cache_probe(client, sorted(int(u) for u in dataset.user_ids.raw_ids), args.cache_calls)
            store = open_store(valkey.url)
            stored = sum(1 for e in store.events_after() if e.event_id.startswith("u1test-"))
            store.close()
            # The replicas keep serving while the retrain runs: the new bundle reaches them live.
            gate = retrain.main(
                [
                    "--feedback",
                    valkey.url,
                    "--data",
                    str(args.data),
                    "--state-dir",
                    str(state),
                    "--out",
                    str(repo),
                    "--bundle",
                    str(bundle),
                    *(f"--train-arg={a}" for a in args.train_arg),
                ]
            )
            users = [str(u) for u in test["user"].unique()]
            rollout = roll_out(replicas, bundle, users, args.stage_s)
            details["bundle_after_rollout"] = rollout["promoted_bundle"]
            # The monitors follow the promoted bundle: its reference, windows started afresh.
            details["psi_right_after_rollout"] = _max_psi(replicas)[1]
            with RecommenderClient([r.target for r in replicas], timeout=10) as client:
                shifted = dataset.ratings[horror[dataset.ratings["item"].to_numpy()]].sample(3000, random_state=0)
                raw = shifted.assign(
                    user=dataset.user_ids.to_raw(shifted["user"]), item=dataset.item_ids.to_raw(shifted["item"])
                )
                replay(client, raw, "horror", retry_share=0.0)
                # New users who disliked a dozen long-tail items each ask once: the models' scores shift.
                rng = np.random.default_rng(0)
                for n in range(300):
                    picked = dataset.item_ids.raw_ids[rng.choice(long_tail, 12, replace=False)]
                    client.recommend(f"bench-shifted-{n}", k=10, ratings={int(i): 1.0 for i in picked})
                shifted_psi, details["shifted_psi"] = _max_psi(replicas)
        finally:
            stop_replicas(replicas)
    cross_ok = ok and all(n > 0 for n in details["feedback_calls_per_replica"])
    held = len(sent.held_back)
    report = {
        "events_sent": sent.events_sent,
        "events_stored": stored,
        "duplicates_ignored": sent.duplicates_ignored,
        "cross_replica_ok": cross_ok,
        "cache": {k: cache[k] for k in ("hit_rate", "p50_ms_hit", "p50_ms_miss")},
        "retrain": {
            "before_ndcg@10": round(gate["before_ndcg@10"], 4),
            "after_ndcg@10": round(gate["after_ndcg@10"], 4),
            "eval": f"ensemble NDCG@10 on the {held} held-back ratings (each u1.test user's last "
            "rating, never replayed; relevant >= 4); both models rank the full catalogue "
            "given u1.base + the replayed feedback as history",
        },
        "drift": {"in_distribution_max_psi": round(in_psi, 4), "shifted_max_psi": round(shifted_psi, 4)},
        "rollout": {
            k: rollout[k]
            for k in (
                "method",
                "outcome",
                "promoted_bundle",
                "replica_bundles",
                "seconds",
                "answers_by_bundle",
                "failed_calls",
            )
        },
    }
    details.update(
        retries=sent.retried_events,
        new_events_reported=sent.new_events,
        gate=gate["gate"],
        cache_calls=cache["calls"],
        rollout_log=rollout["log"],
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    args.out.with_name("feedback_loop_details.json").write_text(json.dumps(details, indent=1, default=str))
    bars = {
        "events_stored == unique events sent": report["events_stored"] == sent.events_sent,
        "duplicates_ignored == retried events": sent.duplicates_ignored == sent.retried_events,
        "cross_replica_ok": cross_ok,
        "in-distribution max PSI < 0.1": in_psi < 0.1,
        "shifted max PSI > 0.25": shifted_psi > 0.25,
        "rolled out live to every replica": rollout["outcome"] == "retired"
        and set(rollout["replica_bundles"]) == {rollout["promoted_bundle"]},
    }
    print(json.dumps({**report, "bars": bars}, indent=1))
    return report


if __name__ == "__main__":
    main()

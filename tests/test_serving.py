"""End to end: the real embedded Triton, our gRPC server and the SDK over loopback."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from recsys import contract
from recsys.v1 import recommender_pb2 as pb
from recsys.v1 import recommender_pb2_grpc as pb_grpc

from clients.aio import AsyncRecommenderClient
from clients.errors import InvalidArgument, NotFound
from clients.retry import NO_RETRY
from clients.sync import RecommenderClient
from server.bundle import Bundle, load_bundle
from server.triton import EmbeddedTriton
from tests.stack import Artifacts, ServerThread, settings_for


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="module")
def stack(serving_artifacts: Artifacts, serving_triton: EmbeddedTriton, state: Path) -> Iterator[ServerThread]:
    settings = settings_for(serving_artifacts, serving_triton.grpc_url, state, max_message_bytes=256 * 1024)
    with ServerThread(settings) as server:
        yield server


@pytest.fixture(scope="module")
def client(stack: ServerThread) -> Iterator[RecommenderClient]:
    with RecommenderClient(stack.target, timeout=10, retry=NO_RETRY) as c:
        yield c


@pytest.fixture(scope="module")
def bundle(serving_artifacts: Artifacts) -> Bundle:
    return load_bundle(serving_artifacts.bundle)


def _user_with(bundle: Bundle, at_least: int) -> tuple[str, set[int]]:
    counts = np.diff(bundle.histories.indptr)
    row = int(np.flatnonzero(counts >= at_least)[0])
    raw = next(u for u, i in bundle.user_index.items() if i == row)
    return raw, {int(bundle.item_ids[i]) for i in bundle.histories[row].indices}


def test_known_user_gets_the_full_ensemble(client: RecommenderClient, bundle: Bundle) -> None:
    user, rated = _user_with(bundle, 15)
    result = client.recommend(user, k=8, explain=True)
    assert (result.strategy, result.rung, result.plan, result.degraded) == ("ensemble", "full", "full", False)
    assert len(result.items) == 8 and not rated & {i.item_id for i in result.items}
    # Every catalogue scorer (EASE too) and the two-tower halves (the stack exports no one-graph model).
    assert {c.model for c in result.model_calls} == {
        *(f"{m}_torchscript_fp32" for m in contract.CATALOG_SCORERS),
        "two_tower_user_torchscript_fp32",
        "two_tower_items_torchscript_fp32",
    }
    assert all(c.ok and c.version == "1" for c in result.model_calls)
    assert result.history_size == len(rated) and result.bundle_version == "1" and len(result.request_id) == 32
    assert [i.score for i in result.items] == sorted((i.score for i in result.items), reverse=True)
    first = result.items[0]
    assert first.title == bundle.titles[bundle.item_index[first.item_id]] and first.reasons
    assert {"prepare", "models", "fusion", "total"} <= set(result.timings_ms)


def test_cold_start_ladder_reports_its_rung(client: RecommenderClient, bundle: Bundle) -> None:
    nobody = client.recommend("someone-new", k=5)
    assert (nobody.rung, nobody.strategy, nobody.model_calls, nobody.degraded) == ("popularity", "popular", [], False)
    popular = [int(bundle.item_ids[i]) for i in np.argsort(-bundle.popularity, kind="stable")[:5]]
    assert [i.item_id for i in nobody.items] == popular
    few = client.recommend(k=5, ratings={popular[0]: 5, popular[1]: 4, 999999: 3})
    assert few.rung == "content" and few.history_size == 2 and few.unknown_item_ids == [999999]
    assert {c.model for c in few.model_calls} == {"two_tower_user_torchscript_fp32", "two_tower_items_torchscript_fp32"}
    assert not {popular[0], popular[1]} & {i.item_id for i in few.items}
    user, _ = _user_with(bundle, 15)
    assert client.recommend(user, k=5).rung == "full"


def test_popularity_within_a_demographic_segment(client: RecommenderClient, bundle: Bundle) -> None:
    gender = bundle.vocab["genders"][0]
    result = client.recommend(k=5, gender=gender, explain=True)
    assert result.rung == "popularity"
    assert all(r.startswith("popular with users like you") for i in result.items for r in i.reasons)


def test_single_model_strategies_and_variants(client: RecommenderClient, bundle: Bundle) -> None:
    user, _ = _user_with(bundle, 15)
    int8 = client.recommend(user, k=5, strategy="sae", variant="int8")
    assert (int8.rung, int8.strategy) == ("single_model", "sae")
    assert [c.model for c in int8.model_calls] == ["sae_torchscript_int8"]
    # fp16 is not loaded by this server: the default variant answers, and the call says which ran.
    fp16 = client.recommend(user, k=5, strategy="rbm", variant="fp16")
    assert [c.model for c in fp16.model_calls] == ["rbm_torchscript_fp32"]
    tower = client.recommend(user, k=5, strategy="two_tower", variant="int8")
    # The item scorer is a Linear layer now, so it has an int8 variant too.
    assert [c.model for c in tower.model_calls] == [
        "two_tower_user_torchscript_int8",
        "two_tower_items_torchscript_int8",
    ]
    assert client.recommend(user, k=5, strategy="popular").model_calls == []
    ease = client.recommend(user, k=5, strategy="ease", variant="int8")
    assert (ease.rung, ease.strategy, [c.model for c in ease.model_calls]) == (
        "single_model",
        "ease",
        ["ease_torchscript_int8"],
    )
    assert len(ease.items) == 5 and all(c.ok for c in ease.model_calls)


def test_filters_exclusions_and_diversity(client: RecommenderClient, bundle: Bundle) -> None:
    user, _ = _user_with(bundle, 15)
    genre = bundle.genre_names[int(np.argmax(bundle.genres.sum(axis=0)))]
    filtered = client.recommend(user, k=6, genres=[genre])
    assert filtered.items and all(genre in i.genres for i in filtered.items)
    years = bundle.years[bundle.years > 0]
    low, high = int(np.percentile(years, 25)), int(np.percentile(years, 75))
    dated = client.recommend(user, k=6, min_year=low, max_year=high)
    assert all(i.year is not None and low <= i.year <= high for i in dated.items)
    plain = client.recommend(user, k=6)
    excluded = client.recommend(user, k=6, exclude=[i.item_id for i in plain.items[:3]])
    assert not {i.item_id for i in plain.items[:3]} & {i.item_id for i in excluded.items}

    def genre_spread(items: list) -> int:
        return len({g for i in items for g in i.genres})

    diverse = client.recommend(user, k=6, diversity=0.9)
    assert genre_spread(diverse.items) >= genre_spread(plain.items)


def test_similar_items_and_onboarding(client: RecommenderClient, bundle: Bundle) -> None:
    item = int(bundle.item_ids[0])
    similar = client.similar_items(item, k=5)
    assert similar.item.item_id == item and len(similar.items) == 5 and item not in {i.item_id for i in similar.items}
    assert [i.score for i in similar.items] == sorted((i.score for i in similar.items), reverse=True)
    onboarding = client.onboarding_items(k=10)
    assert len({i.item_id for i in onboarding.items}) == 10
    top_genres = {g for i in onboarding.items for g in i.genres}
    assert len(top_genres) >= 4  # spread over genres, not the ten most popular of one kind
    with pytest.raises(NotFound, match="not in the catalogue"):
        client.similar_items(999999)


BAD_REQUESTS = [
    (pb.RecommendRequest(k=0), grpc.StatusCode.INVALID_ARGUMENT, "k must be between 1 and 100; got 0"),
    (pb.RecommendRequest(k=101), grpc.StatusCode.INVALID_ARGUMENT, "k must be between 1"),
    # Values no enum member has, on purpose: the wire carries any int.
    (pb.RecommendRequest(k=5, strategy=cast(pb.Strategy, 42)), grpc.StatusCode.INVALID_ARGUMENT, "unknown strategy 42"),
    (pb.RecommendRequest(k=5, variant=cast(pb.Variant, 9)), grpc.StatusCode.INVALID_ARGUMENT, "unknown variant 9"),
    (
        pb.RecommendRequest(k=5, ratings=[pb.Rating(item_id=1, rating=9)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "rating 9.0 is not on the scale",
    ),
    (
        pb.RecommendRequest(k=5, ratings=[pb.Rating(item_id=1, rating=float("nan"))]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "rating nan",
    ),
    (pb.RecommendRequest(k=5, genres=["Cooking"]), grpc.StatusCode.INVALID_ARGUMENT, "unknown genre 'Cooking'"),
    (pb.RecommendRequest(k=5, min_year=2000, max_year=1990), grpc.StatusCode.INVALID_ARGUMENT, "is after max_year"),
    (pb.RecommendRequest(k=5, diversity=2), grpc.StatusCode.INVALID_ARGUMENT, "diversity must be between"),
    (pb.RecommendRequest(k=5, latency_budget_ms=60_000), grpc.StatusCode.INVALID_ARGUMENT, "at most 10000"),
    (
        pb.RecommendRequest(k=5, ratings=[pb.Rating(item_id=1, rating=3)] * 5001),
        grpc.StatusCode.INVALID_ARGUMENT,
        "5001 inline ratings; at most 5000",
    ),
    (pb.RecommendRequest(k=5, user_id="x" * 200), grpc.StatusCode.INVALID_ARGUMENT, "user_id must be at most 128"),
    (
        pb.RecommendRequest(k=5, demographics=pb.Demographics(age=-3)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "demographics.age",
    ),
    (pb.RecommendRequest(k=5, user_id="x" * 300_000), grpc.StatusCode.RESOURCE_EXHAUSTED, ""),  # over 256 KiB
    # Amplification: counts are capped before any per-element work, strings are bounded and never echoed whole.
    (pb.RecommendRequest(k=5, genres=["Drama"] * 30_000), grpc.StatusCode.INVALID_ARGUMENT, "30000 genres; at most"),
    (pb.RecommendRequest(k=5, genres=["x" * 200_000]), grpc.StatusCode.INVALID_ARGUMENT, "'xxxxxxxx"),
    (
        pb.RecommendRequest(k=5, exclude_item_ids=[1] * 10_001),
        grpc.StatusCode.INVALID_ARGUMENT,
        "10001 ids; at most 10000",
    ),
    (
        pb.RecommendRequest(k=5, demographics=pb.Demographics(occupation="o" * 100)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "demographics.occupation must be at most 64 characters",
    ),
    (pb.OnboardingRequest(k=5, genres=["Drama"] * 1000), grpc.StatusCode.INVALID_ARGUMENT, "1000 genres; at most"),
    (
        pb.RecordFeedbackRequest(user_id="u", events=[pb.FeedbackEvent(item_id=1, kind=pb.FEEDBACK_KIND_CLICK)] * 1001),
        grpc.StatusCode.INVALID_ARGUMENT,
        "1001 events; at most 1000",
    ),
    (pb.SimilarItemsRequest(item_id=999999, k=3), grpc.StatusCode.NOT_FOUND, "item 999999 is not in the catalogue"),
    (pb.SimilarItemsRequest(item_id=1, k=0), grpc.StatusCode.INVALID_ARGUMENT, "k must be between"),
    (pb.OnboardingRequest(k=-1), grpc.StatusCode.INVALID_ARGUMENT, "k must be between"),
    (
        pb.RecordFeedbackRequest(
            user_id="", events=[pb.FeedbackEvent(item_id=1, kind=pb.FEEDBACK_KIND_RATING, rating=4)]
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "user_id is required",
    ),
    (pb.RecordFeedbackRequest(user_id="u"), grpc.StatusCode.INVALID_ARGUMENT, "events is empty"),
    (
        pb.RecordFeedbackRequest(user_id="u", events=[pb.FeedbackEvent(item_id=1)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "kind must be",
    ),
    (
        pb.RecordFeedbackRequest(
            user_id="u", events=[pb.FeedbackEvent(item_id=999999, kind=pb.FEEDBACK_KIND_RATING, rating=4)]
        ),
        grpc.StatusCode.NOT_FOUND,
        "item 999999",
    ),
    (
        pb.RecordFeedbackRequest(
            user_id="u", events=[pb.FeedbackEvent(item_id=1, kind=pb.FEEDBACK_KIND_RATING, rating=0.2)]
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "events[0]: rating 0.2",
    ),
]


@pytest.mark.parametrize(
    ("request_message", "code", "message"),
    BAD_REQUESTS,
    ids=[f"{type(r).__name__}-{i}" for i, (r, _, _) in enumerate(BAD_REQUESTS)],
)
def test_bad_input_gets_a_clear_status(
    stack: ServerThread, request_message: object, code: grpc.StatusCode, message: str
) -> None:
    method = {
        pb.RecommendRequest: "Recommend",
        pb.SimilarItemsRequest: "SimilarItems",
        pb.OnboardingRequest: "GetOnboardingItems",
        pb.RecordFeedbackRequest: "RecordFeedback",
    }
    with grpc.insecure_channel(stack.target) as channel:
        call = getattr(pb_grpc.RecommenderStub(channel), method[type(request_message)])
        with pytest.raises(grpc.RpcError) as caught:
            call(request_message, timeout=10)
    assert caught.value.code() == code
    assert message in (caught.value.details() or "")
    assert len(caught.value.details() or "") < 2000  # a huge field is never echoed back


def test_malformed_bytes_are_invalid_argument(stack: ServerThread) -> None:
    with grpc.insecure_channel(stack.target) as channel, pytest.raises(grpc.RpcError) as caught:
        raw = channel.unary_unary(
            "/recsys.v1.Recommender/Recommend", request_serializer=None, response_deserializer=None
        )
        raw(b"\xff\xff\xff\xff", timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf message" in (caught.value.details() or "")


def test_unknown_user_without_ratings_is_not_an_error(client: RecommenderClient) -> None:
    assert client.recommend("never-seen-before", k=3).rung == "popularity"


def test_feedback_is_durable_and_shapes_the_next_answer(
    serving_artifacts: Artifacts, serving_triton: EmbeddedTriton, tmp_path: Path, bundle: Bundle
) -> None:
    ids = [int(i) for i in bundle.item_ids[np.argsort(-bundle.popularity, kind="stable")[:12]]]
    settings = settings_for(serving_artifacts, serving_triton.grpc_url, tmp_path)
    with ServerThread(settings) as first, RecommenderClient(first.target, retry=NO_RETRY) as client:
        before = client.recommend("new-user", k=5)
        receipt = client.record_feedback("new-user", ratings={ids[0]: 5, ids[1]: 4}, clicks=[ids[2]])
        assert (receipt.accepted, receipt.profile_size) == (3, 3)
        after = client.recommend("new-user", k=5)
        assert (before.rung, after.rung, after.history_size) == ("popularity", "content", 3)
        assert not set(ids[:3]) & {i.item_id for i in after.items}
        client.record_feedback("new-user", ratings={i: 4 for i in ids[3:12]})
        assert client.recommend("new-user", k=5).rung == "full"
    with ServerThread(settings) as second, RecommenderClient(second.target, retry=NO_RETRY) as client:
        again = client.recommend("new-user", k=5)
        assert (again.rung, again.history_size) == ("full", 12)


def test_list_models_health_and_reflection(client: RecommenderClient, stack: ServerThread) -> None:
    models = client.list_models()
    assert models.triton_ready and models.catalog_size > 0 and models.fusion_method == "rrf"
    by_name = {m.name: m for m in models.models}
    # Every graph has an int8 variant now (the RBM and the item scorer are Linear layers).
    assert set(by_name) == {
        f"{role}_torchscript_{p}"
        for role in (*contract.CATALOG_SCORERS, "two_tower_user", "two_tower_items", contract.FULL_RUNG)
        for p in ("fp32", "int8")
    }
    assert all(m.ready and m.versions == ("1",) for m in models.models)
    # Loaded, but called only with fused_full_rung (off here): the others were warmed up.
    called = [m for m in models.models if m.role != contract.FULL_RUNG]
    assert all(m.calls >= 5 and m.p95_ms > 0 for m in called)
    assert client.health() == "SERVING" and client.health("recsys.v1.Recommender") == "SERVING"
    with grpc.insecure_channel(stack.target) as channel:
        replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        services = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {"recsys.v1.Recommender", "grpc.health.v1.Health"} <= services


def test_request_ids_and_deadlines(stack: ServerThread, bundle: Bundle) -> None:
    user, _ = _user_with(bundle, 15)
    with RecommenderClient(stack.target, header_hook=lambda: [("x-request-id", "trace-123")]) as client:
        assert client.recommend(user, k=3).request_id == "trace-123"
        with pytest.raises(InvalidArgument) as caught:
            client.recommend(user, k=0)
        assert caught.value.request_id == "trace-123" and caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        # The gRPC deadline tightens the budget the server plans with.
        assert client.recommend(user, k=3, budget_ms=5000, timeout=0.5).budget_ms <= 500


def test_async_client(stack: ServerThread, bundle: Bundle) -> None:
    user, _ = _user_with(bundle, 15)

    async def run() -> list:
        async with AsyncRecommenderClient(stack.target) as client:
            # A generous budget: identical answers are only promised when no model misses its budget.
            return await asyncio.gather(
                *(client.recommend(user, k=4, budget_ms=5000) for _ in range(8)),
                client.similar_items(int(bundle.item_ids[0]), k=2),
            )

    *results, similar = asyncio.run(run())
    assert all([i.item_id for i in r.items] == [i.item_id for i in results[0].items] for r in results)
    assert len(similar.items) == 2


def _scrape(stack: ServerThread) -> dict[str, float]:
    assert stack.server is not None and stack.server.metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.server.metrics_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_metrics_endpoint_counts_what_happened(stack: ServerThread, client: RecommenderClient, bundle: Bundle) -> None:
    """Counted by difference around this test's own calls: earlier tests share the server."""
    user, _ = _user_with(bundle, 15)
    before = _scrape(stack)
    known = client.recommend(user, k=3, budget_ms=10_000)
    anonymous = client.recommend(k=3)
    with pytest.raises(InvalidArgument):
        client.recommend(user, k=0)
    after = _scrape(stack)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert known.rung == "full" and anonymous.rung == "popularity"
    # Labelled with the strategy each answer used (the popularity rung answers as "popular").
    answered = [("degraded" if r.degraded else "ok", r.strategy) for r in (known, anonymous)]
    assert known.strategy == "ensemble"
    for outcome, strategy in set(answered):
        labels = f'outcome="{outcome}",rpc="Recommend",strategy="{strategy}"'
        assert delta(f"recsys_requests_total{{{labels}}}") == answered.count((outcome, strategy)), labels
        assert delta(f"recsys_request_latency_seconds_count{{{labels}}}") == answered.count((outcome, strategy))
    assert delta('recsys_requests_total{outcome="INVALID_ARGUMENT",rpc="Recommend",strategy=""}') == 1
    assert delta('recsys_fallback_total{rung="popularity"}') == 1
    assert delta('recsys_fallback_total{rung="full"}') == 1
    sae_calls = sum(call.model == "sae_torchscript_fp32" for call in known.model_calls)
    assert sae_calls >= 1 and delta('recsys_model_latency_seconds_count{model="sae_torchscript_fp32"}') >= sae_calls
    graphs = len(contract.CATALOG_SCORERS) + 3  # the catalogue scorers, the two-tower halves, the full rung
    assert after["recsys_triton_ready"] == 1 and after["recsys_models_ready"] == 2 * graphs  # fp32 + int8 of each

"""Amplification cases for the abuse corpus: inputs that aim at work out of proportion to their bytes.

Lists at and over their caps (one id repeated, ids packed to the message limit), thousands of
unknown ids (each echoed back), explain for the longest history, varints at their extremes and
overlong, unknown fields nested thousands deep (skipped whole) and groups nested inside a known
sub-message (refused at the parser's depth limit), oversized and numerous metadata headers, and a
burst of tiny requests. Each must get its status in milliseconds.

Metadata: the guard refuses more than ``max_metadata_bytes`` (16 KiB) in milliseconds. The
transport reads up to 4 MiB of it, because what it refuses itself (over its limit) reaches the
caller no sooner than ~100 ms, later on a busy machine: a bare gRPC server with an empty handler,
sync or aio, does the same (docs/security.md). Only the case over 4 MiB carries its own bar.
"""

from __future__ import annotations

from typing import Any

from recsys.v1 import recommender_pb2 as pb

from loadtest.benches.abuse import SERVICE, Case, _varint
from server.bundle import Bundle
from server.settings import Settings

# The transport's refusal of metadata over what it reads: a wait inside gRPC, not work (see above).
TRANSPORT_REFUSAL_MS = 2000.0


def amplification_cases(bundle: Bundle, settings: Settings) -> list[Case]:
    room = settings.max_message_bytes - 1024
    item, user, top = int(bundle.item_ids[0]), next(iter(bundle.user_index)), bundle.scale[1]
    rated = bundle.histories.indptr[1:] - bundle.histories.indptr[:-1]
    longest = next(u for u, i in bundle.user_index.items() if i == int(rated.argmax()))
    unknown = [10**12 + i for i in range(max(settings.max_ratings, settings.max_exclusions))]
    rating = pb.Rating(item_id=item, rating=top)
    recommend: list[tuple[str, dict[str, Any], str]] = [
        ("exclusions_at_cap_one_id", dict(exclude_item_ids=[item] * settings.max_exclusions), "OK"),
        ("exclusions_packed_to_the_limit", dict(exclude_item_ids=range(room // 3)), "INVALID_ARGUMENT"),
        ("ratings_at_cap_one_item_explained", dict(explain=True, ratings=[rating] * settings.max_ratings), "OK"),
        ("ratings_to_the_limit", dict(ratings=[rating] * (room // 9)), "INVALID_ARGUMENT"),
        (
            "unknown_ids_at_both_caps",  # every one echoed back in unknown_item_ids
            dict(
                user_id=user,
                ratings=[pb.Rating(item_id=i, rating=top) for i in unknown[: settings.max_ratings]],
                exclude_item_ids=unknown[: settings.max_exclusions],
            ),
            "OK",
        ),
        ("explain_longest_history", dict(user_id=longest, k=settings.max_k, explain=True), "OK"),
        ("ids_at_int64_extremes", dict(exclude_item_ids=[2**63 - 1, -(2**63)] * 1000), "OK"),
        ("budget_max_uint32", dict(latency_budget_ms=2**32 - 1), "INVALID_ARGUMENT"),
    ]
    rec = SERVICE + "Recommend"
    cases = [Case(n, rec, pb.RecommendRequest(**{"k": 10, **f}).SerializeToString(), c) for n, f, c in recommend]
    events = [pb.FeedbackEvent(item_id=item, kind=pb.FEEDBACK_KIND_CLICK)] * settings.max_feedback_events
    feedback = pb.RecordFeedbackRequest(user_id=user, events=events).SerializeToString()
    cases.append(Case("feedback_events_at_cap", SERVICE + "RecordFeedback", feedback, "OK"))
    small = pb.RecommendRequest(k=5).SerializeToString()
    nested = b""
    for _ in range(5000):  # unknown field 1000, each holding the next: skipped whole, never recursed into
        nested = b"\xc2\x3e" + _varint(len(nested)) + nested
    groups = b"\x9b\x06" * 200  # start-group tags in demographics (field 13), deeper than the parser allows
    return [
        *cases,
        Case("k_ten_byte_varint", rec, b"\x18" + b"\xff" * 9 + b"\x01", "INVALID_ARGUMENT"),  # 2**64-1 as int32: -1
        Case(
            "varint_eleven_bytes", rec, b"\x18" + b"\xff" * 10 + b"\x01", "INVALID_ARGUMENT"
        ),  # no varint is that long
        Case("unknown_fields_nested_5000_deep", rec, small + nested, "OK"),
        Case("groups_nested_in_demographics", rec, b"\x6a" + _varint(len(groups)) + groups, "INVALID_ARGUMENT"),
        Case("metadata_one_64_kib_header", rec, small, "RESOURCE_EXHAUSTED", (("x-pad", "a" * 65536),)),
        Case("metadata_2000_headers", rec, small, "RESOURCE_EXHAUSTED", tuple((f"x-h{i}", "v") for i in range(2000))),
        Case("metadata_headers_just_under_the_cap", rec, small, "OK", tuple((f"x-h{i}", "v" * 60) for i in range(150))),
        Case(
            "metadata_one_6_mib_header",  # over what the transport reads: its own (late) refusal
            rec,
            small,
            "RESOURCE_EXHAUSTED",
            (("x-pad", "a" * (6 << 20)),),
            within_ms=TRANSPORT_REFUSAL_MS,
        ),
        Case("metadata_request_id_4_kib", rec, small, "OK", (("x-request-id", "r" * 4096),)),  # kept to 64 chars
        Case(
            "metadata_bearer_token_7_kib",
            rec,
            small,
            "UNAUTHENTICATED",
            (("authorization", "Bearer " + "a.b." * 1800),),
        ),
        Case("burst_of_tiny_requests", rec, pb.RecommendRequest(k=1).SerializeToString(), "OK", burst=200),
    ]

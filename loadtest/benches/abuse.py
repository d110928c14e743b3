"""The abuse corpus: bad, malformed and amplifying requests, as raw bytes, each with the status it must get.

Sizes are chosen against the server's limits (``Settings``): just under the message limit where
the case is about work per byte, just over a count cap where it is about the cap. Valid but
heavy requests (every cap reached at once) are in it too, expected OK: they bound the cost of
the most expensive request a caller may legally send. Amplification cases
(loadtest/benches/amplification.py) follow. Used by tests/test_security.py and
``make bench-security`` (loadtest/benches/security.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from recsys.v1 import recommender_pb2 as pb

from server.bundle import Bundle
from server.settings import Settings

SERVICE = "/recsys.v1.Recommender/"


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    payload: bytes
    expected: str  # a grpc.StatusCode name
    metadata: tuple[tuple[str, str], ...] = ()
    burst: int = 1  # sent this many times at once: the row gives the slowest call and any code not expected
    within_ms: float = 500.0  # the bar for the slowest call (the issue's: no bad request over 500 ms)


def _many(unit: bytes, budget: int) -> int:
    return max(1, budget // len(unit))


def abuse_corpus(bundle: Bundle, settings: Settings) -> list[Case]:
    limit = settings.max_message_bytes
    room = limit - 1024  # under the limit, with room for the other fields
    genre = bundle.genre_names[0]
    item = int(bundle.item_ids[0])
    user = next(iter(bundle.user_index))
    rec, sim, onb, fb = (SERVICE + m for m in ("Recommend", "SimilarItems", "GetOnboardingItems", "RecordFeedback"))
    group_start = b"\x9b\x06"  # field 99, wire type 3 (start group), never closed: nesting until the parser gives up
    cases = [
        (
            "genres_repeated_to_the_limit",
            rec,
            pb.RecommendRequest(k=10, genres=[genre] * _many(b"\x42" + bytes([len(genre)]) + genre.encode(), room)),
            "INVALID_ARGUMENT",
        ),
        ("genre_one_huge_string", rec, pb.RecommendRequest(k=10, genres=["x" * room]), "INVALID_ARGUMENT"),
        (
            "genres_known_plus_one",
            rec,
            pb.RecommendRequest(k=10, genres=[*bundle.genre_names, genre]),
            "INVALID_ARGUMENT",
        ),
        (
            "exclusions_over_cap",
            rec,
            pb.RecommendRequest(k=10, exclude_item_ids=range(settings.max_exclusions + 1)),
            "INVALID_ARGUMENT",
        ),
        (
            "ratings_over_cap",
            rec,
            pb.RecommendRequest(
                k=10, ratings=[pb.Rating(item_id=i, rating=bundle.scale[1]) for i in range(settings.max_ratings + 1)]
            ),
            "INVALID_ARGUMENT",
        ),
        ("user_id_huge", rec, pb.RecommendRequest(k=10, user_id="7" * room), "INVALID_ARGUMENT"),
        (
            "demographics_huge_strings",
            rec,
            pb.RecommendRequest(
                k=10, demographics=pb.Demographics(gender="F" * (room // 2), occupation="x" * (room // 2 - 16))
            ),
            "INVALID_ARGUMENT",
        ),
        (
            "feedback_events_over_cap",
            fb,
            pb.RecordFeedbackRequest(
                user_id=user,
                events=[pb.FeedbackEvent(item_id=item, kind=pb.FEEDBACK_KIND_CLICK)]
                * (settings.max_feedback_events + 1),
            ),
            "INVALID_ARGUMENT",
        ),
        (
            "similar_genres_repeated",
            sim,
            pb.SimilarItemsRequest(item_id=item, k=10, genres=[genre] * 20_000),
            "INVALID_ARGUMENT",
        ),
        (
            "onboarding_exclusions_over_cap",
            onb,
            pb.OnboardingRequest(k=10, exclude_item_ids=[-1] * (settings.max_exclusions + 1)),
            "INVALID_ARGUMENT",
        ),
        # The most a valid request may ask for: every cap at once, all genres, explanations, diversity.
        (
            "heaviest_valid_recommend",
            rec,
            pb.RecommendRequest(
                user_id=user,
                k=settings.max_k,
                explain=True,
                diversity=1.0,
                genres=bundle.genre_names,
                ratings=[
                    pb.Rating(
                        item_id=int(bundle.item_ids[i % bundle.n_items]) if i < bundle.n_items else 10**9 + i,
                        rating=bundle.scale[1],
                    )
                    for i in range(settings.max_ratings)
                ],
                exclude_item_ids=[-(10**15) - i for i in range(settings.max_exclusions)],
            ),
            "OK",
        ),
        (
            "heaviest_valid_onboarding",
            onb,
            pb.OnboardingRequest(
                k=settings.max_k, genres=bundle.genre_names, exclude_item_ids=range(settings.max_exclusions)
            ),
            "OK",
        ),
    ]
    out = [Case(name, method, message.SerializeToString(), code) for name, method, message, code in cases]
    out += [
        Case(
            "over_the_message_limit",
            rec,
            pb.RecommendRequest(k=5, user_id="x" * (limit + 10)).SerializeToString(),
            "RESOURCE_EXHAUSTED",
        ),
        Case("malformed_bytes", rec, b"\xff\xff\xff\xff\xff", "INVALID_ARGUMENT"),
        Case("truncated_varint", rec, b"\x18\xff", "INVALID_ARGUMENT"),
        Case("string_not_utf8", rec, b"\x0a\x02\xff\xfe", "INVALID_ARGUMENT"),
        Case("nested_groups_to_the_limit", rec, group_start * _many(group_start, room), "INVALID_ARGUMENT"),
        Case(
            "unknown_field_to_the_limit",
            rec,
            pb.RecommendRequest(k=5).SerializeToString() + b"\xc2\x3e" + _varint(room - 16) + b"\0" * (room - 16),
            "OK",
        ),  # field 1000: parsed and ignored
    ]
    from loadtest.benches.amplification import amplification_cases  # it builds on Case and _varint from here

    return out + amplification_cases(bundle, settings)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)

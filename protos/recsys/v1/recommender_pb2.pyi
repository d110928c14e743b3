from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Strategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRATEGY_UNSPECIFIED: _ClassVar[Strategy]
    STRATEGY_ENSEMBLE: _ClassVar[Strategy]
    STRATEGY_SAE: _ClassVar[Strategy]
    STRATEGY_RBM: _ClassVar[Strategy]
    STRATEGY_TWO_TOWER: _ClassVar[Strategy]
    STRATEGY_POPULAR: _ClassVar[Strategy]
    STRATEGY_EASE: _ClassVar[Strategy]

class Variant(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VARIANT_AUTO: _ClassVar[Variant]
    VARIANT_FP32: _ClassVar[Variant]
    VARIANT_INT8: _ClassVar[Variant]
    VARIANT_FP16: _ClassVar[Variant]

class Rung(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUNG_UNSPECIFIED: _ClassVar[Rung]
    RUNG_POPULARITY: _ClassVar[Rung]
    RUNG_CONTENT: _ClassVar[Rung]
    RUNG_FULL: _ClassVar[Rung]
    RUNG_SINGLE_MODEL: _ClassVar[Rung]

class FeedbackKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEEDBACK_KIND_UNSPECIFIED: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_RATING: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_CLICK: _ClassVar[FeedbackKind]
STRATEGY_UNSPECIFIED: Strategy
STRATEGY_ENSEMBLE: Strategy
STRATEGY_SAE: Strategy
STRATEGY_RBM: Strategy
STRATEGY_TWO_TOWER: Strategy
STRATEGY_POPULAR: Strategy
STRATEGY_EASE: Strategy
VARIANT_AUTO: Variant
VARIANT_FP32: Variant
VARIANT_INT8: Variant
VARIANT_FP16: Variant
RUNG_UNSPECIFIED: Rung
RUNG_POPULARITY: Rung
RUNG_CONTENT: Rung
RUNG_FULL: Rung
RUNG_SINGLE_MODEL: Rung
FEEDBACK_KIND_UNSPECIFIED: FeedbackKind
FEEDBACK_KIND_RATING: FeedbackKind
FEEDBACK_KIND_CLICK: FeedbackKind

class Rating(_message.Message):
    __slots__ = ("item_id", "rating")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    item_id: int
    rating: float
    def __init__(self, item_id: _Optional[int] = ..., rating: _Optional[float] = ...) -> None: ...

class Demographics(_message.Message):
    __slots__ = ("age", "gender", "occupation")
    AGE_FIELD_NUMBER: _ClassVar[int]
    GENDER_FIELD_NUMBER: _ClassVar[int]
    OCCUPATION_FIELD_NUMBER: _ClassVar[int]
    age: int
    gender: str
    occupation: str
    def __init__(self, age: _Optional[int] = ..., gender: _Optional[str] = ..., occupation: _Optional[str] = ...) -> None: ...

class RecommendRequest(_message.Message):
    __slots__ = ("user_id", "ratings", "k", "strategy", "variant", "latency_budget_ms", "exclude_item_ids", "genres", "min_year", "max_year", "explain", "diversity", "demographics")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    RATINGS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    GENRES_FIELD_NUMBER: _ClassVar[int]
    MIN_YEAR_FIELD_NUMBER: _ClassVar[int]
    MAX_YEAR_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    DEMOGRAPHICS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    ratings: _containers.RepeatedCompositeFieldContainer[Rating]
    k: int
    strategy: Strategy
    variant: Variant
    latency_budget_ms: int
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[int]
    genres: _containers.RepeatedScalarFieldContainer[str]
    min_year: int
    max_year: int
    explain: bool
    diversity: float
    demographics: Demographics
    def __init__(self, user_id: _Optional[str] = ..., ratings: _Optional[_Iterable[_Union[Rating, _Mapping]]] = ..., k: _Optional[int] = ..., strategy: _Optional[_Union[Strategy, str]] = ..., variant: _Optional[_Union[Variant, str]] = ..., latency_budget_ms: _Optional[int] = ..., exclude_item_ids: _Optional[_Iterable[int]] = ..., genres: _Optional[_Iterable[str]] = ..., min_year: _Optional[int] = ..., max_year: _Optional[int] = ..., explain: _Optional[bool] = ..., diversity: _Optional[float] = ..., demographics: _Optional[_Union[Demographics, _Mapping]] = ...) -> None: ...

class ScoredItem(_message.Message):
    __slots__ = ("item_id", "title", "genres", "year", "score", "reasons")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    GENRES_FIELD_NUMBER: _ClassVar[int]
    YEAR_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    item_id: int
    title: str
    genres: _containers.RepeatedScalarFieldContainer[str]
    year: int
    score: float
    reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, item_id: _Optional[int] = ..., title: _Optional[str] = ..., genres: _Optional[_Iterable[str]] = ..., year: _Optional[int] = ..., score: _Optional[float] = ..., reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class StageTiming(_message.Message):
    __slots__ = ("stage", "ms")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    MS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    ms: float
    def __init__(self, stage: _Optional[str] = ..., ms: _Optional[float] = ...) -> None: ...

class ModelCall(_message.Message):
    __slots__ = ("model", "version", "ms", "ok", "error")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MS_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    ms: float
    ok: bool
    error: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., ms: _Optional[float] = ..., ok: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("items", "strategy_used", "rung", "model_calls", "degraded", "degraded_reasons", "timings", "request_id", "unknown_item_ids", "budget_ms", "plan", "bundle_version", "history_size", "cached", "profile_version")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_USED_FIELD_NUMBER: _ClassVar[int]
    RUNG_FIELD_NUMBER: _ClassVar[int]
    MODEL_CALLS_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_REASONS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    HISTORY_SIZE_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    PROFILE_VERSION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    strategy_used: Strategy
    rung: Rung
    model_calls: _containers.RepeatedCompositeFieldContainer[ModelCall]
    degraded: bool
    degraded_reasons: _containers.RepeatedScalarFieldContainer[str]
    timings: _containers.RepeatedCompositeFieldContainer[StageTiming]
    request_id: str
    unknown_item_ids: _containers.RepeatedScalarFieldContainer[int]
    budget_ms: int
    plan: str
    bundle_version: str
    history_size: int
    cached: bool
    profile_version: int
    def __init__(self, items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., strategy_used: _Optional[_Union[Strategy, str]] = ..., rung: _Optional[_Union[Rung, str]] = ..., model_calls: _Optional[_Iterable[_Union[ModelCall, _Mapping]]] = ..., degraded: _Optional[bool] = ..., degraded_reasons: _Optional[_Iterable[str]] = ..., timings: _Optional[_Iterable[_Union[StageTiming, _Mapping]]] = ..., request_id: _Optional[str] = ..., unknown_item_ids: _Optional[_Iterable[int]] = ..., budget_ms: _Optional[int] = ..., plan: _Optional[str] = ..., bundle_version: _Optional[str] = ..., history_size: _Optional[int] = ..., cached: _Optional[bool] = ..., profile_version: _Optional[int] = ...) -> None: ...

class SimilarItemsRequest(_message.Message):
    __slots__ = ("item_id", "k", "genres", "min_year", "max_year")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    GENRES_FIELD_NUMBER: _ClassVar[int]
    MIN_YEAR_FIELD_NUMBER: _ClassVar[int]
    MAX_YEAR_FIELD_NUMBER: _ClassVar[int]
    item_id: int
    k: int
    genres: _containers.RepeatedScalarFieldContainer[str]
    min_year: int
    max_year: int
    def __init__(self, item_id: _Optional[int] = ..., k: _Optional[int] = ..., genres: _Optional[_Iterable[str]] = ..., min_year: _Optional[int] = ..., max_year: _Optional[int] = ...) -> None: ...

class SimilarItemsResponse(_message.Message):
    __slots__ = ("item", "items", "request_id")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    item: ScoredItem
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    request_id: str
    def __init__(self, item: _Optional[_Union[ScoredItem, _Mapping]] = ..., items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class OnboardingRequest(_message.Message):
    __slots__ = ("k", "genres", "exclude_item_ids")
    K_FIELD_NUMBER: _ClassVar[int]
    GENRES_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    k: int
    genres: _containers.RepeatedScalarFieldContainer[str]
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, k: _Optional[int] = ..., genres: _Optional[_Iterable[str]] = ..., exclude_item_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class OnboardingResponse(_message.Message):
    __slots__ = ("items", "request_id")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    request_id: str
    def __init__(self, items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class FeedbackEvent(_message.Message):
    __slots__ = ("item_id", "kind", "rating", "timestamp_ms", "event_id")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    item_id: int
    kind: FeedbackKind
    rating: float
    timestamp_ms: int
    event_id: str
    def __init__(self, item_id: _Optional[int] = ..., kind: _Optional[_Union[FeedbackKind, str]] = ..., rating: _Optional[float] = ..., timestamp_ms: _Optional[int] = ..., event_id: _Optional[str] = ...) -> None: ...

class RecordFeedbackRequest(_message.Message):
    __slots__ = ("user_id", "events")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    events: _containers.RepeatedCompositeFieldContainer[FeedbackEvent]
    def __init__(self, user_id: _Optional[str] = ..., events: _Optional[_Iterable[_Union[FeedbackEvent, _Mapping]]] = ...) -> None: ...

class RecordFeedbackResponse(_message.Message):
    __slots__ = ("accepted", "new_events", "duplicates", "profile_size", "request_id")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    NEW_EVENTS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    PROFILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    new_events: int
    duplicates: int
    profile_size: int
    request_id: str
    def __init__(self, accepted: _Optional[int] = ..., new_events: _Optional[int] = ..., duplicates: _Optional[int] = ..., profile_size: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("name", "role", "variant", "ready", "versions", "p95_ms", "calls")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    P95_MS_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    variant: str
    ready: bool
    versions: _containers.RepeatedScalarFieldContainer[str]
    p95_ms: float
    calls: int
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ..., variant: _Optional[str] = ..., ready: _Optional[bool] = ..., versions: _Optional[_Iterable[str]] = ..., p95_ms: _Optional[float] = ..., calls: _Optional[int] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "bundle_version", "dataset", "registry_versions", "fusion_method", "fusion_weights", "catalog_size", "triton_ready")
    class RegistryVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class FusionWeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODELS_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    FUSION_METHOD_FIELD_NUMBER: _ClassVar[int]
    FUSION_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    CATALOG_SIZE_FIELD_NUMBER: _ClassVar[int]
    TRITON_READY_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    bundle_version: str
    dataset: str
    registry_versions: _containers.ScalarMap[str, int]
    fusion_method: str
    fusion_weights: _containers.ScalarMap[str, float]
    catalog_size: int
    triton_ready: bool
    def __init__(self, models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ..., bundle_version: _Optional[str] = ..., dataset: _Optional[str] = ..., registry_versions: _Optional[_Mapping[str, int]] = ..., fusion_method: _Optional[str] = ..., fusion_weights: _Optional[_Mapping[str, float]] = ..., catalog_size: _Optional[int] = ..., triton_ready: _Optional[bool] = ...) -> None: ...

from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartRolloutRequest(_message.Message):
    __slots__ = ("bundle",)
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    def __init__(self, bundle: _Optional[str] = ...) -> None: ...

class GetRolloutRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PromoteRequest(_message.Message):
    __slots__ = ("stage", "canary_percent")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    CANARY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    stage: str
    canary_percent: float
    def __init__(self, stage: _Optional[str] = ..., canary_percent: _Optional[float] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class RolloutEvent(_message.Message):
    __slots__ = ("at", "rollout_id", "stage", "message")
    AT_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    at: float
    rollout_id: int
    stage: str
    message: str
    def __init__(self, at: _Optional[float] = ..., rollout_id: _Optional[int] = ..., stage: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class SideStats(_message.Message):
    __slots__ = ("answers", "error_rate", "p99_ms", "degraded_share")
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_SHARE_FIELD_NUMBER: _ClassVar[int]
    answers: int
    error_rate: float
    p99_ms: float
    degraded_share: float
    def __init__(self, answers: _Optional[int] = ..., error_rate: _Optional[float] = ..., p99_ms: _Optional[float] = ..., degraded_share: _Optional[float] = ...) -> None: ...

class Rollout(_message.Message):
    __slots__ = ("rollout_id", "stage", "promoted_bundle", "promoted_path", "candidate_bundle", "candidate_path", "canary_percent", "outcome", "events", "live", "candidate", "top10_overlap", "compared", "serving_bundle")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_PATH_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_PATH_FIELD_NUMBER: _ClassVar[int]
    CANARY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    TOP10_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    COMPARED_FIELD_NUMBER: _ClassVar[int]
    SERVING_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    rollout_id: int
    stage: str
    promoted_bundle: str
    promoted_path: str
    candidate_bundle: str
    candidate_path: str
    canary_percent: float
    outcome: str
    events: _containers.RepeatedCompositeFieldContainer[RolloutEvent]
    live: SideStats
    candidate: SideStats
    top10_overlap: float
    compared: int
    serving_bundle: str
    def __init__(self, rollout_id: _Optional[int] = ..., stage: _Optional[str] = ..., promoted_bundle: _Optional[str] = ..., promoted_path: _Optional[str] = ..., candidate_bundle: _Optional[str] = ..., candidate_path: _Optional[str] = ..., canary_percent: _Optional[float] = ..., outcome: _Optional[str] = ..., events: _Optional[_Iterable[_Union[RolloutEvent, _Mapping]]] = ..., live: _Optional[_Union[SideStats, _Mapping]] = ..., candidate: _Optional[_Union[SideStats, _Mapping]] = ..., top10_overlap: _Optional[float] = ..., compared: _Optional[int] = ..., serving_bundle: _Optional[str] = ...) -> None: ...

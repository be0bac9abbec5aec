from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProblemKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROBLEM_KIND_UNSPECIFIED: _ClassVar[ProblemKind]
    PROBLEM_KIND_MATH: _ClassVar[ProblemKind]
    PROBLEM_KIND_MULTIPLE_CHOICE: _ClassVar[ProblemKind]
    PROBLEM_KIND_CODE: _ClassVar[ProblemKind]
    PROBLEM_KIND_OPEN_ENDED: _ClassVar[ProblemKind]
PROBLEM_KIND_UNSPECIFIED: ProblemKind
PROBLEM_KIND_MATH: ProblemKind
PROBLEM_KIND_MULTIPLE_CHOICE: ProblemKind
PROBLEM_KIND_CODE: ProblemKind
PROBLEM_KIND_OPEN_ENDED: ProblemKind

class CodeSpec(_message.Message):
    __slots__ = ("entry_point", "tests", "test_setup", "language", "stub")
    ENTRY_POINT_FIELD_NUMBER: _ClassVar[int]
    TESTS_FIELD_NUMBER: _ClassVar[int]
    TEST_SETUP_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    STUB_FIELD_NUMBER: _ClassVar[int]
    entry_point: str
    tests: str
    test_setup: str
    language: str
    stub: str
    def __init__(self, entry_point: _Optional[str] = ..., tests: _Optional[str] = ..., test_setup: _Optional[str] = ..., language: _Optional[str] = ..., stub: _Optional[str] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_total_tokens", "max_turns", "deadline_s")
    MAX_TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TURNS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    max_total_tokens: int
    max_turns: int
    deadline_s: float
    def __init__(self, max_total_tokens: _Optional[int] = ..., max_turns: _Optional[int] = ..., deadline_s: _Optional[float] = ...) -> None: ...

class Problem(_message.Message):
    __slots__ = ("id", "kind", "text", "options", "code", "reference_answer", "profile", "limits", "metadata", "single_agent", "model")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ANSWER_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SINGLE_AGENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: ProblemKind
    text: str
    options: _containers.RepeatedScalarFieldContainer[str]
    code: CodeSpec
    reference_answer: str
    profile: str
    limits: Limits
    metadata: _containers.ScalarMap[str, str]
    single_agent: bool
    model: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[ProblemKind, str]] = ..., text: _Optional[str] = ..., options: _Optional[_Iterable[str]] = ..., code: _Optional[_Union[CodeSpec, _Mapping]] = ..., reference_answer: _Optional[str] = ..., profile: _Optional[str] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., single_agent: _Optional[bool] = ..., model: _Optional[str] = ...) -> None: ...

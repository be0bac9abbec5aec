from conclave.v1 import problem_pb2 as _problem_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_CEO: _ClassVar[Role]
    ROLE_RECRUITER: _ClassVar[Role]
    ROLE_SOLVER: _ClassVar[Role]
    ROLE_CRITIC: _ClassVar[Role]
    ROLE_EXECUTOR: _ClassVar[Role]
    ROLE_EVALUATOR: _ClassVar[Role]
    ROLE_ARCHIVER: _ClassVar[Role]
    ROLE_SINGLE: _ClassVar[Role]

class FailureReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_REASON_UNSPECIFIED: _ClassVar[FailureReason]
    FAILURE_REASON_CEILING_REACHED: _ClassVar[FailureReason]
    FAILURE_REASON_BUDGET_EXHAUSTED: _ClassVar[FailureReason]
    FAILURE_REASON_POD_UNAVAILABLE: _ClassVar[FailureReason]
    FAILURE_REASON_BAD_REPLY: _ClassVar[FailureReason]
    FAILURE_REASON_TIMEOUT: _ClassVar[FailureReason]
    FAILURE_REASON_INVALID_REQUEST: _ClassVar[FailureReason]
ROLE_UNSPECIFIED: Role
ROLE_CEO: Role
ROLE_RECRUITER: Role
ROLE_SOLVER: Role
ROLE_CRITIC: Role
ROLE_EXECUTOR: Role
ROLE_EVALUATOR: Role
ROLE_ARCHIVER: Role
ROLE_SINGLE: Role
FAILURE_REASON_UNSPECIFIED: FailureReason
FAILURE_REASON_CEILING_REACHED: FailureReason
FAILURE_REASON_BUDGET_EXHAUSTED: FailureReason
FAILURE_REASON_POD_UNAVAILABLE: FailureReason
FAILURE_REASON_BAD_REPLY: FailureReason
FAILURE_REASON_TIMEOUT: FailureReason
FAILURE_REASON_INVALID_REQUEST: FailureReason

class MemoryLine(_message.Message):
    __slots__ = ("sender", "content")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    sender: str
    content: str
    def __init__(self, sender: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class CeoDecision(_message.Message):
    __slots__ = ("action", "recruit_number", "direction", "max_tokens", "turn", "fallback", "reason", "stop_set_aside")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[CeoDecision.Action]
        ACTION_CONTINUE: _ClassVar[CeoDecision.Action]
        ACTION_STOP: _ClassVar[CeoDecision.Action]
    ACTION_UNSPECIFIED: CeoDecision.Action
    ACTION_CONTINUE: CeoDecision.Action
    ACTION_STOP: CeoDecision.Action
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RECRUIT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STOP_SET_ASIDE_FIELD_NUMBER: _ClassVar[int]
    action: CeoDecision.Action
    recruit_number: int
    direction: str
    max_tokens: int
    turn: int
    fallback: bool
    reason: str
    stop_set_aside: bool
    def __init__(self, action: _Optional[_Union[CeoDecision.Action, str]] = ..., recruit_number: _Optional[int] = ..., direction: _Optional[str] = ..., max_tokens: _Optional[int] = ..., turn: _Optional[int] = ..., fallback: _Optional[bool] = ..., reason: _Optional[str] = ..., stop_set_aside: _Optional[bool] = ...) -> None: ...

class Evaluation(_message.Message):
    __slots__ = ("correctness", "advice", "recruit_suggestion", "fallback", "blocked", "check_reply")
    CORRECTNESS_FIELD_NUMBER: _ClassVar[int]
    ADVICE_FIELD_NUMBER: _ClassVar[int]
    RECRUIT_SUGGESTION_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_FIELD_NUMBER: _ClassVar[int]
    CHECK_REPLY_FIELD_NUMBER: _ClassVar[int]
    correctness: int
    advice: str
    recruit_suggestion: str
    fallback: bool
    blocked: bool
    check_reply: str
    def __init__(self, correctness: _Optional[int] = ..., advice: _Optional[str] = ..., recruit_suggestion: _Optional[str] = ..., fallback: _Optional[bool] = ..., blocked: _Optional[bool] = ..., check_reply: _Optional[str] = ...) -> None: ...

class ExecutionResult(_message.Message):
    __slots__ = ("passed", "tests_run", "tests_failed", "output", "status", "wall_s", "dataset_tests", "kind", "check_answer", "contradicts", "computed")
    PASSED_FIELD_NUMBER: _ClassVar[int]
    TESTS_RUN_FIELD_NUMBER: _ClassVar[int]
    TESTS_FAILED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    WALL_S_FIELD_NUMBER: _ClassVar[int]
    DATASET_TESTS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CHECK_ANSWER_FIELD_NUMBER: _ClassVar[int]
    CONTRADICTS_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_FIELD_NUMBER: _ClassVar[int]
    passed: bool
    tests_run: int
    tests_failed: int
    output: str
    status: str
    wall_s: float
    dataset_tests: bool
    kind: str
    check_answer: str
    contradicts: bool
    computed: bool
    def __init__(self, passed: _Optional[bool] = ..., tests_run: _Optional[int] = ..., tests_failed: _Optional[int] = ..., output: _Optional[str] = ..., status: _Optional[str] = ..., wall_s: _Optional[float] = ..., dataset_tests: _Optional[bool] = ..., kind: _Optional[str] = ..., check_answer: _Optional[str] = ..., contradicts: _Optional[bool] = ..., computed: _Optional[bool] = ...) -> None: ...

class RoleTask(_message.Message):
    __slots__ = ("task_id", "problem_id", "role", "problem", "turn", "round", "index", "persona", "max_tokens", "direction", "solution", "memory", "recruit_number", "advice", "execution", "profile", "temperature", "top_p", "reasoning", "tokens_used", "token_ceiling", "last_evaluation", "max_turns", "parse_retries", "model", "as_single_agent")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PERSONA_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    SOLUTION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    RECRUIT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    ADVICE_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    TOKENS_USED_FIELD_NUMBER: _ClassVar[int]
    TOKEN_CEILING_FIELD_NUMBER: _ClassVar[int]
    LAST_EVALUATION_FIELD_NUMBER: _ClassVar[int]
    MAX_TURNS_FIELD_NUMBER: _ClassVar[int]
    PARSE_RETRIES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    AS_SINGLE_AGENT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    problem_id: str
    role: Role
    problem: _problem_pb2.Problem
    turn: int
    round: int
    index: int
    persona: str
    max_tokens: int
    direction: str
    solution: str
    memory: _containers.RepeatedCompositeFieldContainer[MemoryLine]
    recruit_number: int
    advice: str
    execution: ExecutionResult
    profile: str
    temperature: float
    top_p: float
    reasoning: bool
    tokens_used: int
    token_ceiling: int
    last_evaluation: Evaluation
    max_turns: int
    parse_retries: int
    model: str
    as_single_agent: bool
    def __init__(self, task_id: _Optional[str] = ..., problem_id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., problem: _Optional[_Union[_problem_pb2.Problem, _Mapping]] = ..., turn: _Optional[int] = ..., round: _Optional[int] = ..., index: _Optional[int] = ..., persona: _Optional[str] = ..., max_tokens: _Optional[int] = ..., direction: _Optional[str] = ..., solution: _Optional[str] = ..., memory: _Optional[_Iterable[_Union[MemoryLine, _Mapping]]] = ..., recruit_number: _Optional[int] = ..., advice: _Optional[str] = ..., execution: _Optional[_Union[ExecutionResult, _Mapping]] = ..., profile: _Optional[str] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., reasoning: _Optional[bool] = ..., tokens_used: _Optional[int] = ..., token_ceiling: _Optional[int] = ..., last_evaluation: _Optional[_Union[Evaluation, _Mapping]] = ..., max_turns: _Optional[int] = ..., parse_retries: _Optional[int] = ..., model: _Optional[str] = ..., as_single_agent: _Optional[bool] = ...) -> None: ...

class PromptMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class ModelCall(_message.Message):
    __slots__ = ("prompt", "raw_text", "visible_text", "prompt_tokens", "completion_tokens", "max_tokens", "finish_reason", "pod", "seconds", "messages")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RAW_TEXT_FIELD_NUMBER: _ClassVar[int]
    VISIBLE_TEXT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    POD_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    raw_text: str
    visible_text: str
    prompt_tokens: int
    completion_tokens: int
    max_tokens: int
    finish_reason: str
    pod: str
    seconds: float
    messages: _containers.RepeatedCompositeFieldContainer[PromptMessage]
    def __init__(self, prompt: _Optional[str] = ..., raw_text: _Optional[str] = ..., visible_text: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., max_tokens: _Optional[int] = ..., finish_reason: _Optional[str] = ..., pod: _Optional[str] = ..., seconds: _Optional[float] = ..., messages: _Optional[_Iterable[_Union[PromptMessage, _Mapping]]] = ...) -> None: ...

class RoleReply(_message.Message):
    __slots__ = ("task_id", "problem_id", "role", "turn", "round", "index", "persona", "content", "agree", "experts", "decision", "evaluation", "execution", "calls", "fallback", "fallback_reason", "error", "worker", "failure")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PERSONA_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    AGREE_FIELD_NUMBER: _ClassVar[int]
    EXPERTS_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    problem_id: str
    role: Role
    turn: int
    round: int
    index: int
    persona: str
    content: str
    agree: bool
    experts: _containers.RepeatedScalarFieldContainer[str]
    decision: CeoDecision
    evaluation: Evaluation
    execution: ExecutionResult
    calls: _containers.RepeatedCompositeFieldContainer[ModelCall]
    fallback: bool
    fallback_reason: str
    error: str
    worker: str
    failure: FailureReason
    def __init__(self, task_id: _Optional[str] = ..., problem_id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., turn: _Optional[int] = ..., round: _Optional[int] = ..., index: _Optional[int] = ..., persona: _Optional[str] = ..., content: _Optional[str] = ..., agree: _Optional[bool] = ..., experts: _Optional[_Iterable[str]] = ..., decision: _Optional[_Union[CeoDecision, _Mapping]] = ..., evaluation: _Optional[_Union[Evaluation, _Mapping]] = ..., execution: _Optional[_Union[ExecutionResult, _Mapping]] = ..., calls: _Optional[_Iterable[_Union[ModelCall, _Mapping]]] = ..., fallback: _Optional[bool] = ..., fallback_reason: _Optional[str] = ..., error: _Optional[str] = ..., worker: _Optional[str] = ..., failure: _Optional[_Union[FailureReason, str]] = ...) -> None: ...

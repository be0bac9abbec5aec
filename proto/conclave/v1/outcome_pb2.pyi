from conclave.v1 import agents_pb2 as _agents_pb2
from conclave.v1 import problem_pb2 as _problem_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CandidateSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CANDIDATE_SOURCE_UNSPECIFIED: _ClassVar[CandidateSource]
    CANDIDATE_SOURCE_SOLVER: _ClassVar[CandidateSource]
    CANDIDATE_SOURCE_CHECK: _ClassVar[CandidateSource]

class VoteRule(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VOTE_RULE_UNSPECIFIED: _ClassVar[VoteRule]
    VOTE_RULE_NO_CANDIDATE: _ClassVar[VoteRule]
    VOTE_RULE_MAJORITY: _ClassVar[VoteRule]
    VOTE_RULE_TIE_COMPUTED: _ClassVar[VoteRule]
    VOTE_RULE_TIE_EARLIEST: _ClassVar[VoteRule]
CANDIDATE_SOURCE_UNSPECIFIED: CandidateSource
CANDIDATE_SOURCE_SOLVER: CandidateSource
CANDIDATE_SOURCE_CHECK: CandidateSource
VOTE_RULE_UNSPECIFIED: VoteRule
VOTE_RULE_NO_CANDIDATE: VoteRule
VOTE_RULE_MAJORITY: VoteRule
VOTE_RULE_TIE_COMPUTED: VoteRule
VOTE_RULE_TIE_EARLIEST: VoteRule

class Error(_message.Message):
    __slots__ = ("code", "message", "subject", "problem_id")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_ID_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    subject: str
    problem_id: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., subject: _Optional[str] = ..., problem_id: _Optional[str] = ...) -> None: ...

class ProgressEvent(_message.Message):
    __slots__ = ("problem_id", "type", "turn", "round", "role", "persona", "text", "tokens", "decision", "evaluation", "execution", "experts", "t_s", "agree", "fallback", "fallback_reason", "set_aside")
    PROBLEM_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PERSONA_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    EXPERTS_FIELD_NUMBER: _ClassVar[int]
    T_S_FIELD_NUMBER: _ClassVar[int]
    AGREE_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    SET_ASIDE_FIELD_NUMBER: _ClassVar[int]
    problem_id: str
    type: str
    turn: int
    round: int
    role: _agents_pb2.Role
    persona: str
    text: str
    tokens: int
    decision: _agents_pb2.CeoDecision
    evaluation: _agents_pb2.Evaluation
    execution: _agents_pb2.ExecutionResult
    experts: _containers.RepeatedScalarFieldContainer[str]
    t_s: float
    agree: bool
    fallback: bool
    fallback_reason: str
    set_aside: str
    def __init__(self, problem_id: _Optional[str] = ..., type: _Optional[str] = ..., turn: _Optional[int] = ..., round: _Optional[int] = ..., role: _Optional[_Union[_agents_pb2.Role, str]] = ..., persona: _Optional[str] = ..., text: _Optional[str] = ..., tokens: _Optional[int] = ..., decision: _Optional[_Union[_agents_pb2.CeoDecision, _Mapping]] = ..., evaluation: _Optional[_Union[_agents_pb2.Evaluation, _Mapping]] = ..., execution: _Optional[_Union[_agents_pb2.ExecutionResult, _Mapping]] = ..., experts: _Optional[_Iterable[str]] = ..., t_s: _Optional[float] = ..., agree: _Optional[bool] = ..., fallback: _Optional[bool] = ..., fallback_reason: _Optional[str] = ..., set_aside: _Optional[str] = ...) -> None: ...

class RoleTokens(_message.Message):
    __slots__ = ("role", "prompt_tokens", "completion_tokens", "calls")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    role: _agents_pb2.Role
    prompt_tokens: int
    completion_tokens: int
    calls: int
    def __init__(self, role: _Optional[_Union[_agents_pb2.Role, str]] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., calls: _Optional[int] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("problem_id", "status", "answer", "extracted_answer", "turns", "tokens", "total_tokens", "wall_s", "stop_reason", "error", "correct", "consensus", "metadata", "profile", "single_agent", "fallbacks", "stop_detail", "trace_id", "report")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROBLEM_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    EXTRACTED_ANSWER_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    WALL_S_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    CONSENSUS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    SINGLE_AGENT_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    STOP_DETAIL_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    problem_id: str
    status: str
    answer: str
    extracted_answer: str
    turns: int
    tokens: _containers.RepeatedCompositeFieldContainer[RoleTokens]
    total_tokens: int
    wall_s: float
    stop_reason: str
    error: Error
    correct: int
    consensus: bool
    metadata: _containers.ScalarMap[str, str]
    profile: str
    single_agent: bool
    fallbacks: int
    stop_detail: str
    trace_id: str
    report: StructuredReport
    def __init__(self, problem_id: _Optional[str] = ..., status: _Optional[str] = ..., answer: _Optional[str] = ..., extracted_answer: _Optional[str] = ..., turns: _Optional[int] = ..., tokens: _Optional[_Iterable[_Union[RoleTokens, _Mapping]]] = ..., total_tokens: _Optional[int] = ..., wall_s: _Optional[float] = ..., stop_reason: _Optional[str] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., correct: _Optional[int] = ..., consensus: _Optional[bool] = ..., metadata: _Optional[_Mapping[str, str]] = ..., profile: _Optional[str] = ..., single_agent: _Optional[bool] = ..., fallbacks: _Optional[int] = ..., stop_detail: _Optional[str] = ..., trace_id: _Optional[str] = ..., report: _Optional[_Union[StructuredReport, _Mapping]] = ...) -> None: ...

class ReportFinding(_message.Message):
    __slots__ = ("domain", "text")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    domain: str
    text: str
    def __init__(self, domain: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class StructuredReport(_message.Message):
    __slots__ = ("verdict", "confidence", "findings", "risks", "experiments", "complete", "problems")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    RISKS_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    verdict: str
    confidence: float
    findings: _containers.RepeatedCompositeFieldContainer[ReportFinding]
    risks: _containers.RepeatedScalarFieldContainer[str]
    experiments: _containers.RepeatedScalarFieldContainer[str]
    complete: bool
    problems: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, verdict: _Optional[str] = ..., confidence: _Optional[float] = ..., findings: _Optional[_Iterable[_Union[ReportFinding, _Mapping]]] = ..., risks: _Optional[_Iterable[str]] = ..., experiments: _Optional[_Iterable[str]] = ..., complete: _Optional[bool] = ..., problems: _Optional[_Iterable[str]] = ...) -> None: ...

class TrajectoryMessage(_message.Message):
    __slots__ = ("seq", "turn", "round", "role", "index", "persona", "call", "fallback", "fallback_reason", "agree")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PERSONA_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    AGREE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    turn: int
    round: int
    role: _agents_pb2.Role
    index: int
    persona: str
    call: _agents_pb2.ModelCall
    fallback: bool
    fallback_reason: str
    agree: bool
    def __init__(self, seq: _Optional[int] = ..., turn: _Optional[int] = ..., round: _Optional[int] = ..., role: _Optional[_Union[_agents_pb2.Role, str]] = ..., index: _Optional[int] = ..., persona: _Optional[str] = ..., call: _Optional[_Union[_agents_pb2.ModelCall, _Mapping]] = ..., fallback: _Optional[bool] = ..., fallback_reason: _Optional[str] = ..., agree: _Optional[bool] = ...) -> None: ...

class Trajectory(_message.Message):
    __slots__ = ("problem", "messages", "decisions", "evaluations", "executions", "result", "consensus", "format_ok", "trace_id", "answer_vote")
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    EVALUATIONS_FIELD_NUMBER: _ClassVar[int]
    EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CONSENSUS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_OK_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWER_VOTE_FIELD_NUMBER: _ClassVar[int]
    problem: _problem_pb2.Problem
    messages: _containers.RepeatedCompositeFieldContainer[TrajectoryMessage]
    decisions: _containers.RepeatedCompositeFieldContainer[_agents_pb2.CeoDecision]
    evaluations: _containers.RepeatedCompositeFieldContainer[_agents_pb2.Evaluation]
    executions: _containers.RepeatedCompositeFieldContainer[_agents_pb2.ExecutionResult]
    result: Result
    consensus: bool
    format_ok: bool
    trace_id: str
    answer_vote: AnswerVote
    def __init__(self, problem: _Optional[_Union[_problem_pb2.Problem, _Mapping]] = ..., messages: _Optional[_Iterable[_Union[TrajectoryMessage, _Mapping]]] = ..., decisions: _Optional[_Iterable[_Union[_agents_pb2.CeoDecision, _Mapping]]] = ..., evaluations: _Optional[_Iterable[_Union[_agents_pb2.Evaluation, _Mapping]]] = ..., executions: _Optional[_Iterable[_Union[_agents_pb2.ExecutionResult, _Mapping]]] = ..., result: _Optional[_Union[Result, _Mapping]] = ..., consensus: _Optional[bool] = ..., format_ok: _Optional[bool] = ..., trace_id: _Optional[str] = ..., answer_vote: _Optional[_Union[AnswerVote, _Mapping]] = ...) -> None: ...

class AnswerCandidate(_message.Message):
    __slots__ = ("source", "answer", "turn", "round", "answer_class")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ANSWER_CLASS_FIELD_NUMBER: _ClassVar[int]
    source: CandidateSource
    answer: str
    turn: int
    round: int
    answer_class: int
    def __init__(self, source: _Optional[_Union[CandidateSource, str]] = ..., answer: _Optional[str] = ..., turn: _Optional[int] = ..., round: _Optional[int] = ..., answer_class: _Optional[int] = ...) -> None: ...

class AnswerVote(_message.Message):
    __slots__ = ("candidates", "class_votes", "winner_class", "winner", "rule", "changed")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    CLASS_VOTES_FIELD_NUMBER: _ClassVar[int]
    WINNER_CLASS_FIELD_NUMBER: _ClassVar[int]
    WINNER_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[AnswerCandidate]
    class_votes: _containers.RepeatedScalarFieldContainer[int]
    winner_class: int
    winner: int
    rule: VoteRule
    changed: bool
    def __init__(self, candidates: _Optional[_Iterable[_Union[AnswerCandidate, _Mapping]]] = ..., class_votes: _Optional[_Iterable[int]] = ..., winner_class: _Optional[int] = ..., winner: _Optional[int] = ..., rule: _Optional[_Union[VoteRule, str]] = ..., changed: _Optional[bool] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("subject", "stream", "stream_seq", "deliveries", "error", "payload", "headers", "at_unix_s")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    STREAM_SEQ_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    AT_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    subject: str
    stream: str
    stream_seq: int
    deliveries: int
    error: Error
    payload: bytes
    headers: _containers.ScalarMap[str, str]
    at_unix_s: float
    def __init__(self, subject: _Optional[str] = ..., stream: _Optional[str] = ..., stream_seq: _Optional[int] = ..., deliveries: _Optional[int] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., payload: _Optional[bytes] = ..., headers: _Optional[_Mapping[str, str]] = ..., at_unix_s: _Optional[float] = ...) -> None: ...

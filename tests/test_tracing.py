"""One problem, one trace: real NATS, the real gateway (scripted backend), every agent service, and a real
OTLP receiver that the SDK's OTLP exporter sends the spans to."""

from __future__ import annotations

from conclave.v1 import problem_pb2
from services.runtime import tracing
from tests.agents.scripts import team
from tests.helpers.otlp import exporting_to, otlp_receiver

PROBLEM_TEXT = "What is 2+3? (traced)"


async def test_one_problem_yields_one_connected_trace_across_the_services(agent_stack, monkeypatch):
    async with otlp_receiver() as receiver:
        # The CEO runs as its own process, configured from the standard OTel variables like in a pod;
        # the other services run in this process and export through the same kind of OTLP exporter.
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://{receiver.address}")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        async with exporting_to(receiver):
            async with agent_stack(team(), as_processes=("ceo",)) as env:
                problem = problem_pb2.Problem(id="traced-1", kind=problem_pb2.PROBLEM_KIND_MATH, text=PROBLEM_TEXT,
                                              profile="math500", reference_answer="5")
                result = await env.solve(problem)
                traj = await env.trajectory("traced-1")
    assert result.stop_reason == "accepted"
    assert len(result.trace_id) == 32 and traj.trace_id == result.trace_id
    spans = receiver.trace(result.trace_id)
    by_id = {s.span_id: s for s in spans}

    # Every hop is there: intake, the CEO, at least three roles, the gRPC client and the gateway, the pod.
    assert {s.service for s in spans if s.scope == "conclave.ceo"} == {"conclave-ceo"}
    scopes = {s.scope for s in spans}
    assert {"conclave.intake", "conclave.ceo", "conclave.inference"} <= scopes
    assert len(scopes & {"conclave.recruiter", "conclave.solver", "conclave.critic", "conclave.evaluator"}) >= 3
    names = {s.name for s in spans}
    assert {"intake.submit", "ceo.problem", "ceo.turn", "ceo.decide", "step.solver", "solver.task",
            "/conclave.v1.Inference/Generate", "gateway.generate", "pod.request"} <= names

    # One tree: a single root (the intake's span), every other span's parent is in the same trace.
    roots = [s for s in spans if not s.parent_id]
    assert [r.name for r in roots] == ["intake.submit"]
    assert all(s.parent_id in by_id for s in spans if s.parent_id)

    def chain(span) -> list[str]:
        out = [span.name]
        while span.parent_id:
            span = by_id[span.parent_id]
            out.append(span.name)
        return out

    # The gateway call of a critic, up to the root, through every hop of the NATS and gRPC path.
    critic_pod = next(s for s in spans if s.name == "pod.request"
                      and by_id[by_id[s.parent_id].parent_id].parent_id in by_id
                      and chain(s)[3] == "critic.task")
    assert chain(critic_pod) == ["pod.request", "gateway.generate", "/conclave.v1.Inference/Generate",
                                 "critic.task", "step.critic", "ceo.review", "ceo.turn", "ceo.problem",
                                 "intake.submit"]
    # The CEO's own decision is a model call made straight from its phase span.
    decide_call = next(s for s in spans if s.name == "gateway.generate" and chain(s)[2] == "ceo.decide")
    assert decide_call.attributes[tracing.ROLE] == "ceo"

    # Each critic has its own step; attributes carry role, turn, round, tokens and outcome.
    critic_steps = [s for s in spans if s.name == "step.critic"]
    assert sorted(s.attributes[tracing.INDEX] for s in critic_steps) == [0, 1]
    for s in critic_steps:
        assert s.attributes[tracing.TURN] == 1 and s.attributes[tracing.ROUND] == 1
        assert s.attributes[tracing.OUTCOME] == "ok" and s.attributes[tracing.TOKENS] > 0
    problem_span = next(s for s in spans if s.name == "ceo.problem")
    assert problem_span.attributes[tracing.OUTCOME] == "accepted"
    # Never the problem text.
    assert not [s for s in spans for v in s.attributes.values() if isinstance(v, str) and "2+3" in v]


async def test_each_pod_attempt_sends_its_span_context_to_the_pod():
    """Each attempt on a pod is a pod.request span (a pod that fails before the first token, then the one
    that serves), and the pod gets that span's context: vLLM (--otlp-traces-endpoint) continues the trace."""
    from services.inference.backends.scripted import ScriptedBackend
    from tests.inference_helpers.gateway import chat, running_gateway

    backend = ScriptedBackend(lambda req: "four", model="m")
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with otlp_receiver() as receiver:
        async with exporting_to(receiver):
            async with running_gateway(["scripted://pod-a", "scripted://pod-b"], backend, health_interval_s=300) as gw:
                backend.down.add("pod-a")
                for key in ("s1", "s2", "s3", "s4"):  # some land on pod-a first, then move to pod-b
                    async for _ in gw.stub.Generate(chat("2+2?", 8, session_key=key), timeout=30,
                                                    metadata=[("traceparent", parent)]):
                        pass
    pods = {s.span_id: s for s in receiver.spans if s.name == "pod.request"}
    sent = [r.traceparent.split("-") for r in backend.calls]
    assert sent and all(p[1] == "0af7651916cd43dd8448eb211c80319c" for p in sent)
    assert {p[2] for p in sent} <= set(pods)
    outcomes = {s.attributes[tracing.OUTCOME] for s in pods.values()}
    assert "ok" in outcomes and "ejected" in outcomes


def test_json_logs_written_inside_a_span_carry_its_trace_id():
    import json
    import logging

    from opentelemetry.sdk.trace import TracerProvider

    from services.runtime.logs import JsonFormatter

    span = TracerProvider().get_tracer("test").start_span("x")
    record = logging.LogRecord("conclave", logging.INFO, __file__, 1, "hello", None, None)
    with tracing.trace.use_span(span, end_on_exit=True):
        doc = json.loads(JsonFormatter("test").format(record))
    assert doc["trace_id"] == tracing.trace_id_of(span)
    assert "trace_id" not in json.loads(JsonFormatter("test").format(record))

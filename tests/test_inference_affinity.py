"""Affinity routing over several model pods (one per GPU): every call of a problem goes to that
problem's pod while it has room, problems spread over the pods, and a call without a session key is
routed by its prompt's leading text, so calls sharing a prefix still meet one pod's cache."""

from __future__ import annotations

from collections import Counter

from services.inference.backends.base import GenRequest, Message
from services.inference.backends.scripted import ScriptedBackend, ScriptRule
from services.inference.pods import PodPool
from services.inference.router import PREFIX_CHARS, Router, affinity_key
from tests.inference_helpers.gateway import chat as grpc_chat
from tests.inference_helpers.gateway import running_gateway


def pods(n: int) -> PodPool:
    pool = PodPool(4, 4)
    pool.set_urls([f"http://vllm-{i}:8000" for i in range(n)])
    return pool


def chat(system: str, user: str) -> GenRequest:
    return GenRequest(model="default", messages=(Message("system", system), Message("user", user)))


def test_each_problem_keeps_one_pod_and_problems_spread_over_the_pods() -> None:
    router = Router(pods(2), 128)
    firsts = {}
    for turn in range(5):  # a discussion's successive calls (CEO, solvers, critics) share the problem id
        for p in range(200):
            key = affinity_key(f"problem-{p}", chat(f"role {turn}", f"history of {p} at turn {turn}"))
            assert firsts.setdefault(p, router.candidates(key)[0]) is router.candidates(key)[0]
    share = Counter(pod.name for pod in firsts.values())
    assert len(share) == 2 and min(share.values()) > 70  # a fair share is 100


def test_a_call_without_a_session_is_routed_by_its_prompt_prefix() -> None:
    router = Router(pods(4), 128)
    system = "You are a careful solver. " * 20
    a = affinity_key("", chat(system, "Problem: 2+3? " + "x" * PREFIX_CHARS + " first follow-up"))
    b = affinity_key("", chat(system, "Problem: 2+3? " + "x" * PREFIX_CHARS + " another follow-up"))
    assert a == b and a.startswith("prefix:")
    assert router.home(a) is router.home(b)
    others = {router.home(affinity_key("", chat(system, f"Problem {i}"))).name for i in range(40)}
    assert len(others) > 1  # different prompts still spread
    # A session key wins over the prompt; an empty request has no affinity (least loaded pod).
    assert affinity_key("problem-1", chat(system, "x")) == "problem-1"
    assert affinity_key("", GenRequest(model="default")) == ""
    assert affinity_key("", GenRequest(model="default", prompt="raw text")).startswith("prefix:")


async def test_a_discussion_through_the_gateway_stays_on_its_pod_and_the_metric_says_so() -> None:
    """The real gateway over gRPC in front of two pods (the scripted backend: deterministic text)."""
    backend = ScriptedBackend([ScriptRule(pattern="", response="fine")])
    async with running_gateway(pods=["scripted://a", "scripted://b"], backend=backend,
                               health_interval_s=30.0) as gw:
        used: dict[str, set[str]] = {}
        for turn in range(3):
            for p in range(8):
                _, usage = await gw.generate(grpc_chat(f"problem {p}, turn {turn}", 4, session_key=f"problem-{p}"))
                used.setdefault(f"problem-{p}", set()).add(usage.pod)
        _, a = await gw.generate(grpc_chat("the same long prompt " * 200 + "one", 4))
        _, b = await gw.generate(grpc_chat("the same long prompt " * 200 + "two", 4))
        assert all(len(pods) == 1 for pods in used.values())  # each problem on one pod
        assert len({p for pods in used.values() for p in pods}) == 2  # and the problems on both pods
        assert a.pod == b.pod  # no session key: the shared prefix routes
        assert gw.metric("conclave_inference_routed_total", by="session", outcome="home") == 24
        assert gw.metric("conclave_inference_routed_total", by="prefix", outcome="home") == 2
        assert gw.metric("conclave_inference_routed_total", by="session", outcome="moved") == 0

"""Affinity routing over several model pods (one per GPU): every call of a problem goes to that
problem's pod while it has room, problems spread over the pods, and a call without a session key is
routed by its prompt's leading text, so calls sharing a prefix still meet one pod's cache."""

from __future__ import annotations

from collections import Counter

from services.inference.backends.base import GenRequest, Message
from services.inference.pods import PodPool
from services.inference.router import PREFIX_CHARS, Router, affinity_key


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

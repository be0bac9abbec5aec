"""Problem metadata can tune a profile along the paper's axes (what `conclave eval --sweep` uses)."""

from __future__ import annotations

import pytest

from services.protocol import profile as profiles


def test_every_built_in_profile_loads():
    for name in ("aime2024", "math500", "gpqa", "humaneval", "mbpp", "business", "open"):
        assert profiles.load(name).name == name


def test_overrides_change_only_what_they_name():
    base = profiles.load("humaneval")
    tuned = profiles.with_overrides(base, {"profile.critic_rounds": "1", "profile.require_passing_tests": "true",
                                           "unrelated": "x"})
    assert tuned.critic_rounds == 1 and tuned.require_passing_tests
    assert (tuned.n_min, tuned.initial_n, tuned.n_cap, tuned.max_turns) == \
        (base.n_min, base.initial_n, base.n_cap, base.max_turns)
    assert not base.require_passing_tests  # the paper's protocol: the evaluator alone decides


def test_the_verified_profiles_ask_the_first_draft_as_the_single_agent_and_the_papers_do_not():
    for name in profiles.available():
        grounded = name.endswith(("-verified", "-grounded"))
        assert profiles.load(name).first_draft == ("single" if grounded else "team"), name
        assert profiles.load(name).final_answer == ("vote" if name.endswith("-grounded") else "last"), name
    tuned = profiles.with_overrides(profiles.load("math500"), {"profile.first_draft": "single"})
    assert tuned.first_draft == "single"


def test_a_fixed_team_size_and_a_budget_cap():
    tuned = profiles.with_overrides(profiles.load("aime2024"),
                                    {"profile.n_min": "3", "profile.n_cap": "3", "profile.k_cap": "4096"})
    assert (tuned.n_min, tuned.initial_n, tuned.n_cap) == (3, 3, 3)
    assert tuned.budget_menu == (2048, 4096)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("profile.critic_rounds", "many", "not a whole number"),
    ("profile.require_passing_tests", "maybe", "not true or false"),
    ("profile.temperature", "1", "overrides nothing"),
    ("profile.first_draft", "solver", "not one of team, single"),
    ("profile.final_answer", "best", "not one of last, vote"),
    ("profile.check_programs", "20", "not 1 to 8"),
])
def test_bad_overrides_are_refused_with_the_reason(key, value, message):
    with pytest.raises(profiles.ProfileError, match=message):
        profiles.with_overrides(profiles.load("math500"), {key: value})

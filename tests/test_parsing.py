"""Tolerant parsing: the variants small models write are accepted; replies that skip the protocol are not."""

import pytest

from services.protocol import profile as profiles
from services.protocol.parsing import (
    ParseError,
    check_solution,
    parse_decision,
    parse_experts,
    parse_review,
    parse_verdict,
    snap,
)

MENU = (2048, 4096, 8192, 16384, 32000)


def test_a_decision_in_markdown_with_odd_numbers_parses_and_is_clamped():
    d = parse_decision("**Decision:** Continue\n**Recruit Number:** 7\n**Direction:** Check the base case.\n"
                       "**Maximum Tokens:** 5,000", n_min=2, n_cap=3, menu=MENU)
    assert (d.stop, d.recruit_number, d.max_tokens, d.direction) == (False, 3, 4096, "Check the base case.")
    assert parse_decision("Decision: stop\nRecruit Number: 1\nMaximum Tokens: 12k", n_min=2, n_cap=3,
                          menu=MENU).stop


@pytest.mark.parametrize("text, reason", [
    ("I think we should go on.", "no 'Decision:' line"),
    ("Decision: maybe\nRecruit Number: 2\nMaximum Tokens: 2048", "neither continue nor stop"),
    ("Decision: continue\nMaximum Tokens: 2048\nDirection: go", "Recruit Number"),
    ("Decision: continue\nRecruit Number: 2\nMaximum Tokens: 4096", "Direction"),
])
def test_a_decision_without_its_fields_is_refused(text, reason):
    with pytest.raises(ParseError, match=reason):
        parse_decision(text, n_min=2, n_cap=3, menu=MENU)


def test_budgets_snap_to_the_nearest_menu_entry():
    assert [snap(k, MENU) for k in (1, 3000, 3072, 20000, 10**9)] == [2048, 2048, 4096, 16384, 32000]


def test_experts_are_read_from_numbered_or_bulleted_lists():
    assert parse_experts("Here:\n1. A physicist\n2) A chemist\n- A statistician", 3) == [
        "A physicist", "A chemist", "A statistician"]
    with pytest.raises(ParseError, match="named 1 experts, 2 were asked for"):
        parse_experts("1. A physicist", 2)


def test_a_review_needs_reasons_before_its_tag():
    review = parse_review("The second step divides by zero when x = 0, so the result is wrong.\n[Disagree]")
    assert review.agree is False
    with pytest.raises(ParseError, match="bare tag"):
        parse_review("[Agree]")
    with pytest.raises(ParseError, match="bare tag"):
        parse_review("[Agree]     if the solution is correct and complete")  # the prompt echoed back
    with pytest.raises(ParseError, match="no \\[Agree\\]"):
        parse_review("Looks fine to me overall, nothing to add here.")
    assert parse_review("All steps are right and the final value matches my own computation. [Agree] "
                        "if the solution is correct").text.endswith("[Agree]")


def test_verdicts_accept_words_and_numbers():
    assert parse_verdict("**Correctness:** 1\nAdvice: fine\nRecruit: none").correctness == 1
    assert parse_verdict("Correctness: incorrect\nAdvice: redo step 2").correctness == 0
    with pytest.raises(ParseError):
        parse_verdict("It looks good.")


def test_solutions_must_have_the_answer_format_of_their_kind():
    check_solution("so \\boxed{\\frac{1}{2}}", "math")
    check_solution("```python\ndef f():\n    return 1\n```", "code")
    for text, kind, reason in (("the answer is 5", "math", "boxed"), ("\\boxed{answer}", "math", "placeholder"),
                               ("no code here at all.", "code", "code block"), ("", "open_ended", "empty")):
        with pytest.raises(ParseError, match=reason):
            check_solution(text, kind)
    with pytest.raises(ParseError, match="repeats the direction"):
        check_solution("Focus on the edge cases.", "open_ended", echo_of="Focus on the edge cases.")


def test_every_builtin_profile_loads_with_all_its_prompts():
    for name in profiles.available():
        p = profiles.load(name)
        for role in ("ceo", "recruiter", "solver", "critic", "evaluator", "executor", "single"):
            assert p.prompt(role).user
    assert profiles.load("mbpp").max_turns == 1 and profiles.load("aime2024").critic_rounds == 3


def test_a_user_profile_dir_is_searched_first(tmp_path, monkeypatch):
    (tmp_path / "mine.yaml").write_text("name: mine\nkind: math\nprompts: [common]\ninitial_n: 3\nn_cap: 4\n")
    monkeypatch.setenv("CONCLAVE_PROFILES_DIRS", str(tmp_path))
    assert profiles.load("mine").n_cap == 4 and "mine" in profiles.available()
    (tmp_path / "bad.yaml").write_text("name: bad\nkind: math\nprompts: [common]\nturns: 3\n")
    with pytest.raises(profiles.ProfileError, match="unknown keys \\['turns'\\]"):
        profiles.load("bad")


def test_a_code_problem_shows_its_signature_when_the_statement_lacks_it():
    from conclave.v1 import problem_pb2
    from services.protocol.context import problem_text

    p = problem_pb2.Problem(text="Write a function that removes a character.")
    p.code.stub = "def remove_Occ(s,ch):"
    assert "def remove_Occ(s,ch):" in problem_text(p)
    p.text = "def remove_Occ(s,ch):\n    '''Remove ch.'''"
    assert problem_text(p) == p.text  # already there: not repeated

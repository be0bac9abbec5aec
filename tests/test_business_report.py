"""Business reports a program can read: the deterministic structure check, and the CEO acting on it.

The end-to-end test runs the real stack with the scripted backend (deterministic replies, named as such).
"""

from __future__ import annotations

import pytest

from ceo import report
from conclave.v1 import agents_pb2, problem_pb2
from tests.agents.scripts import AGREE, CORRECT, R, Script, ceo

FULL = """**Verdict:** not supported
**Confidence:** 0.7
Findings by domain:
- **Market**: Norway has about 600k dog-owning households; 5k subscribers is 0.8% of them.
- Finance: at NOK 300 a box the margin covers acquisition only after 9 months.
- Confidence in the supply chain: two suppliers, both in Sweden.
Key risks:
- Churn above 8% a month
- Customs delays
Next experiments:
1. A landing page with a price test for two weeks
2. A pre-order campaign with 200 boxes
END OF REPORT"""


def test_a_full_report_is_read_into_fields():
    r = report.parse(FULL)
    assert r.complete and not r.problems
    assert r.verdict == "not_supported" and r.confidence == pytest.approx(0.7)
    assert [f.domain for f in r.findings] == ["Market", "Finance", "Confidence in the supply chain"]
    assert list(r.risks) == ["Churn above 8% a month", "Customs delays"]
    assert len(r.experiments) == 2 and r.experiments[0].startswith("A landing page")


def test_a_report_cut_off_mid_word_is_incomplete():
    cut = FULL[: FULL.index("Next experiments")] + "Next experiments:\n1. A landing page with a pri"
    r = report.parse(cut)
    assert not r.complete and any("cut off" in p for p in r.problems)


def test_a_marker_written_first_does_not_end_the_report_and_singular_headers_count():
    # As the CPU model (Qwen2.5-Coder-0.5B) wrote it: the marker on top, "Finding by domain", no end marker.
    text = "### END OF REPORT\n\n" + FULL.replace("Findings by domain", "**Finding by domain:**").replace(
        "Key risks", "Key risk").removesuffix("END OF REPORT")
    r = report.parse(text)
    assert r.verdict == "not_supported" and len(r.findings) == 3 and len(r.risks) == 2
    assert r.problems == ["no 'END OF REPORT' line after the sections: the report was cut off or not finished"]
    assert report.parse(text + "END OF REPORT").complete
    bold = report.parse(FULL.replace("- **Market**: Norway", "- **Market:** Norway"))
    assert bold.findings[0].domain == "Market" and bold.findings[0].text.startswith("Norway has")


def test_a_report_without_sections_is_incomplete_and_says_which():
    r = report.parse("The idea looks promising overall and the team should go ahead.\nEND OF REPORT")
    assert not r.complete
    assert {p for p in r.problems if p.endswith(" section")} == {
        "no 'verdict' section", "no 'confidence' section", "no 'findings' section", "no 'risks' section",
        "no 'experiments' section"}


@pytest.mark.parametrize("line,value", [("Confidence: 70%", 0.7), ("Confidence: 65", 0.65), ("Confidence: 0.3", 0.3)])
def test_confidence_on_a_percent_scale_is_read_as_a_fraction(line, value):
    assert report.parse(FULL.replace("**Confidence:** 0.7", line)).confidence == pytest.approx(value)


def test_a_verdict_outside_the_set_is_a_problem():
    r = report.parse(FULL.replace("not supported", "maybe later"))
    assert not r.complete and "the verdict is none of supported, not_supported, uncertain" in r.problems


PANEL = "1. A market expert\n2. A finance expert\n3. A technology expert\n4. A risk expert"


def business(pid: str) -> problem_pb2.Problem:
    return problem_pb2.Problem(id=pid, kind=problem_pb2.PROBLEM_KIND_OPEN_ENDED, profile="business",
                               text="Dog food boxes in Norway reach 5k subscribers in a year.")


@pytest.mark.asyncio
async def test_a_truncated_report_is_not_accepted_and_the_team_revises(agent_stack):
    truncated = FULL[: FULL.index("Key risks")] + "Key risks:\n- Churn above 8% a mo"
    script = Script([
        (R.ROLE_CEO, "Turn 2 of", ceo(n=4, k=1024, direction="Finish the report with every section.")),
        (R.ROLE_CEO, ".", ceo(n=4, k=1024, direction="Assess the market size first.")),
        (R.ROLE_RECRUITER, ".", PANEL),
        (R.ROLE_SOLVER, "Finish the report", FULL),
        (R.ROLE_SOLVER, ".", truncated),
        (R.ROLE_CRITIC, ".", AGREE),
        (R.ROLE_EVALUATOR, ".", CORRECT),  # a trusting evaluator: it accepts the cut-off report too
    ])
    async with agent_stack(script) as env:
        result = await env.solve(business("biz-1"))
        traj = await env.trajectory("biz-1")
    assert result.stop_reason == "accepted" and result.turns == 2
    assert result.report.complete and result.report.verdict == "not_supported"
    assert result.report.confidence == pytest.approx(0.7) and len(result.report.experiments) == 2
    assert [e.correctness for e in traj.evaluations] == [1, 1]  # turn 1's yes was overruled by the check
    notes = [e.text for e in env.events["biz-1"] if e.type == "evaluation" and "not accepted" in e.text]
    assert notes and "cut off" in notes[0]


@pytest.mark.asyncio
async def test_an_unparsable_ceo_falls_back_to_the_profiles_starting_team(agent_stack):
    script = Script([
        (R.ROLE_CEO, ".", "Let us carry on, I suppose."),
        (R.ROLE_RECRUITER, ".", PANEL),
        (R.ROLE_SOLVER, ".", FULL),
        (R.ROLE_CRITIC, ".", AGREE),
        (R.ROLE_EVALUATOR, ".", CORRECT),
    ])
    async with agent_stack(script) as env:
        result = await env.solve(business("biz-2"))
        traj = await env.trajectory("biz-2")
    (decision,) = traj.decisions
    assert decision.fallback and decision.recruit_number == 4
    assert len([m for m in traj.messages if m.role == agents_pb2.ROLE_CRITIC]) == 3
    assert result.report.complete

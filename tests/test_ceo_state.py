"""The CEO's state survives its KV round trip exactly, and its trajectory grows step by step in order."""

from __future__ import annotations

from ceo.state import ProblemState
from conclave.v1 import agents_pb2 as R


def reply(role: int, text: str, turn: int = 1) -> R.RoleReply:
    return R.RoleReply(task_id=f"p/t{turn}-{text}", problem_id="p", role=role, turn=turn, content=text,
                       calls=[R.ModelCall(raw_text=text, prompt_tokens=10, completion_tokens=5)])


def test_the_trajectory_keeps_every_step_in_order():
    st = ProblemState(problem_id="p")
    st.record_decision(R.CeoDecision(turn=1, recruit_number=3, max_tokens=4096),
                       [R.ModelCall(raw_text="Decision: continue")], "")
    st.record_reply(reply(R.ROLE_RECRUITER, "experts"))
    st.record_reply(reply(R.ROLE_SOLVER, "boxed 5"))
    st.record_decision(R.CeoDecision(turn=2, action=R.CeoDecision.ACTION_STOP), [R.ModelCall(raw_text="stop")],
                       "no Decision line")
    traj = st.trajectory()
    assert [(m.seq, m.role, m.call.raw_text) for m in traj.messages] == [
        (1, R.ROLE_CEO, "Decision: continue"), (2, R.ROLE_RECRUITER, "experts"), (3, R.ROLE_SOLVER, "boxed 5"),
        (4, R.ROLE_CEO, "stop")]
    assert [d.turn for d in traj.decisions] == [1, 2]
    assert traj.messages[3].fallback_reason == "no Decision line" and st.fallbacks == 1
    assert st.tokens_used == 30


def test_the_state_reads_back_as_it_was_written():
    st = ProblemState(problem_id="p", n=3, experts=["a math expert"], plan="\\boxed{5}")
    st.solver_memory.append(("critic 1", "check the sum"))
    st.critic_memory.append([("solver", "here it is")])
    st.evaluation = {"correctness": 0, "advice": "recheck"}
    st.record_reply(reply(R.ROLE_SOLVER, "boxed 5"))
    again = ProblemState.from_bytes(st.to_bytes())
    assert again == st
    assert again.trajectory() == st.trajectory()

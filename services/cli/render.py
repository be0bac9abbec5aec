"""How the CLI shows events and results.

Model text is never read as rich markup: every line is built from `Text` pieces, so a reply containing
`[/i]` or `\\[` prints exactly as the model wrote it (markup in a model reply used to raise inside the
NATS callback and lose the event).
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from conclave.v1 import agents_pb2, outcome_pb2

COLORS = {"ROLE_CEO": "magenta", "ROLE_RECRUITER": "cyan", "ROLE_SOLVER": "green", "ROLE_CRITIC": "yellow",
          "ROLE_EXECUTOR": "blue", "ROLE_EVALUATOR": "red", "ROLE_SINGLE": "green"}


def _short(text: str, limit: int = 600) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + " …"


def _fallback(ev: outcome_pb2.ProgressEvent) -> Text:
    if not ev.fallback:
        return Text()
    return Text(f" (fallback: {_short(ev.fallback_reason, 200) or 'reply could not be parsed'})", "bold yellow")


def _verdict(ev: outcome_pb2.ProgressEvent) -> Text:
    """A critic's verdict as the protocol counted it; a fallback review counts as agreeing."""
    if ev.fallback:
        return Text("counted as agree", "yellow") + _fallback(ev)
    return Text("agree", "green") if ev.agree else Text("disagree", "red")


def event_text(ev: outcome_pb2.ProgressEvent) -> Text | None:
    """One event as it is printed, or None for events the live view does not show."""
    role = agents_pb2.Role.Name(ev.role)
    color = COLORS.get(role, "white")
    line = Text(f"{ev.t_s:6.1f}s t{ev.turn} r{ev.round} ", "dim")
    if ev.type == "decision":
        d = ev.decision
        action = agents_pb2.CeoDecision.Action.Name(d.action).removeprefix("ACTION_").lower()
        line += Text("CEO", "magenta") + f" {action}: N={d.recruit_number} K={d.max_tokens}"
        if d.direction:
            line += f" — {_short(d.direction, 200)}"
        line += _fallback(ev)
        if ev.set_aside:
            line += Text(f"\n        {ev.set_aside}", "bold yellow")
    elif ev.type == "recruited":
        line += Text("experts", "cyan") + (": " + "; ".join(_short(e, 80) for e in ev.experts))
        line += _fallback(ev)
    elif ev.type == "message":
        name = role.removeprefix("ROLE_").lower()
        who = ev.persona or name
        line += Text(name, color) + f" ({_short(who, 60)}, {ev.tokens} tok)"
        if ev.role == agents_pb2.ROLE_CRITIC:
            line += Text(" → ") + _verdict(ev)
        elif ev.fallback:
            line += _fallback(ev)
        line += "\n" + _short(ev.text)
    elif ev.type == "consensus":
        line += Text("consensus", "bold green") + f": {ev.text}"
    elif ev.type == "execution":
        line += Text("executor", "blue") + f": {ev.execution.status}"
    elif ev.type == "evaluation":
        ok = "correct" if ev.evaluation.correctness else "not correct"
        line += Text("evaluator", "red") + f": {ok} — {_short(ev.evaluation.advice or ev.text, 200)}"
        line += _fallback(ev)
    elif ev.type == "done":
        line += Text("done", "bold") + f": {ev.text}"
    else:
        return None
    return line


def render_event(console: Console, ev: outcome_pb2.ProgressEvent) -> None:
    text = event_text(ev)
    if text is not None:
        console.print(text)


def print_result(console: Console, r: outcome_pb2.Result) -> None:
    if r.status != "ok":
        console.print(Text(f"error {r.error.code}: {r.error.message}", "red"))
    console.print(Text.assemble("\n", ("answer", "bold"),
                                f" ({r.stop_reason}, {r.turns} turn(s), {r.total_tokens} tokens, {r.wall_s:.1f}s):"))
    console.print(Text(r.extracted_answer or _short(r.answer, 2000)))
    if r.HasField("report"):
        rep = r.report
        state = "complete" if rep.complete else "incomplete: " + "; ".join(rep.problems)
        console.print(Text.assemble(("report", "bold"), f": verdict {rep.verdict or '-'}, "
                                    f"confidence {rep.confidence:.2f}, {len(rep.risks)} risks, "
                                    f"{len(rep.experiments)} experiments ({state})"))
    if r.correct >= 0:
        console.print(Text.assemble("graded: ", ("correct", "green") if r.correct else ("wrong", "red")))
    if r.tokens:
        table = Table(title="tokens by role")
        for col in ("role", "calls", "prompt", "completion"):
            table.add_column(col)
        for t in r.tokens:
            table.add_row(agents_pb2.Role.Name(t.role).removeprefix("ROLE_").lower(), str(t.calls),
                          str(t.prompt_tokens), str(t.completion_tokens))
        console.print(table)

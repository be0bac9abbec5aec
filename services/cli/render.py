"""How the CLI shows events and results."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from conclave.v1 import agents_pb2, outcome_pb2

COLORS = {"ROLE_CEO": "magenta", "ROLE_RECRUITER": "cyan", "ROLE_SOLVER": "green", "ROLE_CRITIC": "yellow",
          "ROLE_EXECUTOR": "blue", "ROLE_EVALUATOR": "red", "ROLE_SINGLE": "green"}


def _short(text: str, limit: int = 600) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + " …"


def render_event(console: Console, ev: outcome_pb2.ProgressEvent) -> None:
    role = agents_pb2.Role.Name(ev.role)
    color = COLORS.get(role, "white")
    head = f"[dim]{ev.t_s:6.1f}s t{ev.turn} r{ev.round}[/dim]"
    if ev.type == "decision":
        d = ev.decision
        action = agents_pb2.CeoDecision.Action.Name(d.action).removeprefix("ACTION_").lower()
        console.print(f"{head} [magenta]CEO[/magenta] {action}: N={d.recruit_number} K={d.max_tokens}"
                      f"{' (fallback)' if d.fallback else ''} — {_short(d.direction, 200)}")
    elif ev.type == "recruited":
        console.print(f"{head} [cyan]experts[/cyan]: " + "; ".join(_short(e, 80) for e in ev.experts))
    elif ev.type == "message":
        who = ev.persona or role.removeprefix("ROLE_").lower()
        console.print(f"{head} [{color}]{role.removeprefix('ROLE_').lower()}[/{color}] ({_short(who, 60)}, "
                      f"{ev.tokens} tok)\n{_short(ev.text)}")
    elif ev.type == "consensus":
        console.print(f"{head} [bold green]consensus[/bold green]: {ev.text}")
    elif ev.type == "execution":
        console.print(f"{head} [blue]executor[/blue]: {ev.execution.status}")
    elif ev.type == "evaluation":
        ok = "correct" if ev.evaluation.correctness else "not correct"
        console.print(f"{head} [red]evaluator[/red]: {ok} — {_short(ev.evaluation.advice, 200)}")
    elif ev.type == "done":
        console.print(f"{head} [bold]done[/bold]: {ev.text}")


def print_result(console: Console, r: outcome_pb2.Result) -> None:
    if r.status != "ok":
        console.print(f"[red]error {r.error.code}: {r.error.message}[/red]")
    console.print(f"\n[bold]answer[/bold] ({r.stop_reason}, {r.turns} turn(s), {r.total_tokens} tokens, {r.wall_s:.1f}s):")
    console.print(r.extracted_answer or _short(r.answer, 2000))
    if r.correct >= 0:
        console.print("graded: " + ("[green]correct[/green]" if r.correct else "[red]wrong[/red]"))
    if r.tokens:
        table = Table(title="tokens by role")
        for col in ("role", "calls", "prompt", "completion"):
            table.add_column(col)
        for t in r.tokens:
            table.add_row(agents_pb2.Role.Name(t.role).removeprefix("ROLE_").lower(), str(t.calls),
                          str(t.prompt_tokens), str(t.completion_tokens))
        console.print(table)

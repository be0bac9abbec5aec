"""The evaluation report: accuracy, tokens by role, wall time, CEO decisions, consensus; markdown, JSON, PNG."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from services.evaluation.runner import Graded, RunSettings
from services.evaluation.stats import wilson_interval


def summarize(graded: list[Graded]) -> dict:
    n = len(graded)
    if not n:
        return {"problems": 0}
    roles: Counter[str] = Counter()
    for g in graded:
        roles.update(g.tokens_by_role)
    decisions = [d for g in graded for d in g.decisions]
    correct = sum(g.correct for g in graded)
    return {
        "problems": n,
        "correct": correct,
        "accuracy": correct / n,
        "accuracy_interval_95": list(wilson_interval(correct, n)),
        "tokens_per_problem": statistics.fmean(g.total_tokens for g in graded),
        "tokens_per_problem_by_role": {r: v / n for r, v in sorted(roles.items())},
        "wall_s_total": sum(g.wall_s for g in graded),
        "wall_s_mean": statistics.fmean(g.wall_s for g in graded),
        "wall_s_p50": statistics.median(g.wall_s for g in graded),
        "turns_mean": statistics.fmean(g.turns for g in graded),
        "consensus_rate": sum(g.consensus for g in graded) / n,
        "stop_reasons": dict(Counter(g.stop_reason for g in graded)),
        "ceo_decisions": {
            "action": dict(Counter(d["action"] for d in decisions)),
            "team_size": dict(sorted(Counter(str(d["n"]) for d in decisions).items())),
            "budget_k": dict(sorted(Counter(str(d["k"]) for d in decisions).items(), key=lambda kv: int(kv[0]))),
            "fallbacks": sum(d["fallback"] for d in decisions),
        },
        "parse_fallbacks": sum(g.fallbacks for g in graded),
    }


def write(out_dir: Path, settings: RunSettings, graded: list[Graded]) -> dict:
    summary = summarize(graded)
    doc = {"settings": asdict(settings), "summary": summary}
    (out_dir / "report.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
    (out_dir / "report.md").write_text(markdown(settings, summary), encoding="utf-8")
    plot(out_dir, graded)
    return summary


EXECUTOR_TESTS = {
    "model": "Code problems: the executor ran tests it wrote; the grading tests stayed hidden from the team.",
    "dataset": "Code problems: the executor ran the grading tests, so the team saw their outcome before grading.",
}


def markdown(settings: RunSettings, s: dict) -> str:
    if not s.get("problems"):
        return f"# {settings.benchmark} ({settings.mode})\n\nNo problems graded.\n"
    lo, hi = s["accuracy_interval_95"]
    team = settings.mode == "mas"
    lines = [
        f"# {settings.benchmark}: {settings.mode}" + (f", profile {settings.profile}" if settings.profile else "")
        + (f", {settings.split} half" if settings.split else ""),
        "",
        f"Model: {settings.model or 'not recorded'}" + (f" (revision {settings.revision})" if settings.revision else "")
        + (f"; run {settings.run_id}" if settings.run_id else "") + ".",
        "",
        *([EXECUTOR_TESTS[settings.executor_tests], ""] if team else []),
        *(["A code turn was accepted only when the executor's tests passed too (--require-passing-tests).", ""]
          if team and settings.require_passing_tests else []),
        *(["Majority vote of independent single-agent samples (`votes.jsonl` has every sample's answer); "
           "the turns column counts samples.", ""] if settings.mode == "vote" else []),
        "| problems | correct | accuracy (95% interval) | tokens/problem | wall s (mean) | turns (mean) |"
        + (" consensus rate |" if team else ""),
        "|---|---|---|---|---|---|" + ("---|" if team else ""),
        f"| {s['problems']} | {s['correct']} | {s['accuracy']:.1%} ({lo:.0%}–{hi:.0%}) | {s['tokens_per_problem']:.0f} | "
        f"{s['wall_s_mean']:.1f} | {s['turns_mean']:.2f} |" + (f" {s['consensus_rate']:.1%} |" if team else ""),
        "",
        "Tokens per problem by role: " + ", ".join(f"{r} {v:.0f}" for r, v in s["tokens_per_problem_by_role"].items()),
        "",
        "Stop reasons: " + ", ".join(f"{k} {v}" for k, v in s["stop_reasons"].items()),
        "",
    ]
    if team:
        lines += [
            "CEO decisions: " + ", ".join(f"{k} {v}" for k, v in s["ceo_decisions"]["action"].items())
            + f"; team sizes {s['ceo_decisions']['team_size']}; budgets K {s['ceo_decisions']['budget_k']}; "
            f"{s['ceo_decisions']['fallbacks']} parse fallbacks",
            "",
        ]
    lines += [f"Parser fallbacks (all roles): {s['parse_fallbacks']}.", "",
              "Plots: `accuracy_vs_tokens.png`, `budgets.png`.", ""]
    return "\n".join(lines)


def plot(out_dir: Path, graded: list[Graded]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if graded:
        order = sorted(graded, key=lambda g: g.total_tokens)
        xs = [g.total_tokens for g in order]
        running = [sum(g.correct for g in order[: i + 1]) / len(order) for i in range(len(order))]
        ax.plot(xs, running, drawstyle="steps-post", label="share solved within x tokens")
        ax.scatter(xs, [1.02 if g.correct else -0.02 for g in order], s=8, alpha=0.5, label="problems (top: correct)")
    ax.set_xlabel("tokens per problem")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "accuracy_vs_tokens.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    ks = [d["k"] for g in graded for d in g.decisions]
    if ks:
        values = sorted(set(ks))
        ax.bar([str(v) for v in values], [ks.count(v) for v in values])
    ax.set_xlabel("per-turn budget K chosen by the CEO")
    ax.set_ylabel("turns")
    fig.tight_layout()
    fig.savefig(out_dir / "budgets.png", dpi=110)
    plt.close(fig)


def write_sweep(out_dir: Path, rows: list[tuple[dict, dict]]) -> None:
    """rows: (axis values, summary) for each point of a sweep."""
    keys = sorted({k for axes, _ in rows for k in axes})
    lines = ["| " + " | ".join([*keys, "accuracy", "tokens/problem", "problems"]) + " |",
             "|" + "---|" * (len(keys) + 3)]
    for axes, s in rows:
        lines.append("| " + " | ".join([*(str(axes.get(k, "")) for k in keys), f"{s.get('accuracy', 0):.1%}",
                                        f"{s.get('tokens_per_problem', 0):.0f}", str(s.get("problems", 0))]) + " |")
    (out_dir / "sweep.md").write_text("# Sweep\n\n" + "\n".join(lines) + "\n", encoding="utf-8")
    (out_dir / "sweep.json").write_text(json.dumps([{"axes": a, "summary": s} for a, s in rows], indent=2),
                                        encoding="utf-8")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for axes, s in rows:
        if s.get("problems"):
            ax.scatter(s["tokens_per_problem"], s["accuracy"])
            ax.annotate(",".join(f"{k}={v}" for k, v in axes.items()), (s["tokens_per_problem"], s["accuracy"]),
                        fontsize=7)
    ax.set_xlabel("tokens per problem")
    ax.set_ylabel("accuracy")
    fig.tight_layout()
    fig.savefig(out_dir / "sweep.png", dpi=110)
    plt.close(fig)

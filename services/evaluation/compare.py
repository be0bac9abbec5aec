"""Two eval runs side by side on the problems both graded: the paper's claim, tested on your model.

Paired, because both systems saw the same problems: which ones each solved, and whether the
difference is larger than chance (exact McNemar test).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from services.evaluation.report import summarize
from services.evaluation.runner import Graded, load_done
from services.evaluation.stats import mcnemar_exact_p


@dataclass(frozen=True)
class Side:
    name: str
    correct: int
    accuracy: float
    interval: tuple[float, float]
    tokens_per_problem: float
    wall_s_mean: float


@dataclass(frozen=True)
class Comparison:
    problems: int
    a: Side
    b: Side
    both: int
    only_a: int
    only_b: int
    neither: int
    p_value: float
    only_a_ids: list[str]
    only_b_ids: list[str]

    @property
    def token_ratio(self) -> float:
        return self.b.tokens_per_problem / self.a.tokens_per_problem if self.a.tokens_per_problem else 0.0


class NothingToCompare(ValueError):
    pass


def _side(name: str, rows: list[Graded]) -> Side:
    s = summarize(rows)
    return Side(name=name, correct=s["correct"], accuracy=s["accuracy"], interval=tuple(s["accuracy_interval_95"]),
                tokens_per_problem=s["tokens_per_problem"], wall_s_mean=s["wall_s_mean"])


def natural(item_id: str) -> list[int | str]:
    """HumanEval/2 before HumanEval/10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", item_id)]


def compare(a: dict[str, Graded], b: dict[str, Graded], names: tuple[str, str] = ("a", "b")) -> Comparison:
    common = sorted((i for i in a if i in b), key=natural)
    if not common:
        raise NothingToCompare("the two runs have no graded problem in common")
    only_a = [i for i in common if a[i].correct and not b[i].correct]
    only_b = [i for i in common if b[i].correct and not a[i].correct]
    both = sum(a[i].correct and b[i].correct for i in common)
    return Comparison(
        problems=len(common),
        a=_side(names[0], [a[i] for i in common]),
        b=_side(names[1], [b[i] for i in common]),
        both=both, only_a=len(only_a), only_b=len(only_b),
        neither=len(common) - both - len(only_a) - len(only_b),
        p_value=mcnemar_exact_p(len(only_a), len(only_b)),
        only_a_ids=only_a, only_b_ids=only_b,
    )


def compare_dirs(dir_a: Path, dir_b: Path) -> Comparison:
    runs = []
    for d in (dir_a, dir_b):
        path = d / "results.jsonl"
        if not path.exists():
            raise NothingToCompare(f"{path} does not exist: point at the --out directory of a `conclave eval` run")
        runs.append(load_done(path))
    names = (dir_a.name, dir_b.name) if dir_a.name != dir_b.name else (str(dir_a), str(dir_b))
    return compare(runs[0], runs[1], names)


def markdown(c: Comparison) -> str:
    def row(s: Side) -> str:
        lo, hi = s.interval
        return (f"| {s.name} | {s.correct}/{c.problems} ({s.accuracy:.1%}) | {lo:.0%}–{hi:.0%} | "
                f"{s.tokens_per_problem:.0f} | {s.wall_s_mean:.1f} |")

    verdict = ("the difference is within chance" if c.p_value >= 0.05
               else f"{c.b.name if c.only_b > c.only_a else c.a.name} is better beyond chance")
    return "\n".join([
        f"# {c.a.name} against {c.b.name}, on the {c.problems} problems both graded",
        "",
        "| run | correct | 95% interval | tokens / problem | wall s / problem |",
        "|---|---|---|---|---|",
        row(c.a), row(c.b),
        "",
        f"Paired: both right {c.both}, only {c.a.name} {c.only_a}, only {c.b.name} {c.only_b}, "
        f"neither {c.neither}. Exact McNemar p = {c.p_value:.3g}: {verdict}.",
        f"{c.b.name} spends {c.token_ratio:.1f}× the tokens of {c.a.name}.",
        "",
        f"Only {c.a.name}: {', '.join(c.only_a_ids) or '-'}",
        f"Only {c.b.name}: {', '.join(c.only_b_ids) or '-'}",
        "",
    ])


def to_json(c: Comparison) -> str:
    return json.dumps(asdict(c) | {"token_ratio": c.token_ratio}, indent=2)

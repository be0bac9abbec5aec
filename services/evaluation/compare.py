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


def _load_run(d: Path) -> dict[str, Graded]:
    path = d / "results.jsonl"
    if not path.exists():
        raise NothingToCompare(f"{path} does not exist: point at the --out directory of a `conclave eval` run")
    return load_done(path)


def _names(dir_a: Path, dir_b: Path) -> tuple[str, str]:
    """The runs' folder names, or their whole paths where the names alone would not tell them apart."""
    return (dir_a.name, dir_b.name) if dir_a.name != dir_b.name else (str(dir_a), str(dir_b))


def _verdict(p_value: float, a_name: str, b_name: str, b_ahead: bool) -> str:
    return ("the difference is within chance" if p_value >= 0.05
            else f"{b_name if b_ahead else a_name} is better beyond chance")


def compare_dirs(dir_a: Path, dir_b: Path) -> Comparison:
    return compare(_load_run(dir_a), _load_run(dir_b), _names(dir_a, dir_b))


def markdown(c: Comparison) -> str:
    def row(s: Side) -> str:
        lo, hi = s.interval
        return (f"| {s.name} | {s.correct}/{c.problems} ({s.accuracy:.1%}) | {lo:.0%}–{hi:.0%} | "
                f"{s.tokens_per_problem:.0f} | {s.wall_s_mean:.1f} |")

    verdict = _verdict(c.p_value, c.a.name, c.b.name, c.only_b > c.only_a)
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


@dataclass(frozen=True)
class PooledSide:
    name: str
    runs: int
    correct_per_run: list[int]
    mean_accuracy: float
    interval: tuple[float, float]  # over problems (a cluster bootstrap), not over attempts
    tokens_per_problem: float


@dataclass(frozen=True)
class Pooled:
    """Repeated runs of two systems on the same problems. Each problem counts once, by the share of its
    runs each system got right; the test is the exact sign test on the problems where the shares differ
    (with one run a side it is McNemar's test). Sampling noise of the model is averaged per problem
    instead of being read as a difference."""

    problems: int
    a: PooledSide
    b: PooledSide
    a_better: int
    b_better: int
    ties: int
    p_value: float
    a_better_ids: list[str]
    b_better_ids: list[str]


def _bootstrap_interval(shares: list[float], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean share, resampling problems (seeded: the same runs, the same
    interval)."""
    import random

    rng, n = random.Random(seed), len(shares)
    means = sorted(sum(rng.choice(shares) for _ in range(n)) / n for _ in range(draws))
    return means[int(0.025 * draws)], means[int(0.975 * draws) - 1]


def compare_pooled(a_runs: list[dict[str, Graded]], b_runs: list[dict[str, Graded]],
                   names: tuple[str, str] = ("a", "b")) -> Pooled:
    common = sorted((i for i in a_runs[0] if all(i in r for r in (*a_runs, *b_runs))), key=natural)
    if not common:
        raise NothingToCompare("the runs have no graded problem in common")

    def shares(runs: list[dict[str, Graded]]) -> dict[str, float]:
        return {i: sum(r[i].correct for r in runs) / len(runs) for i in common}

    sa, sb = shares(a_runs), shares(b_runs)
    a_better = [i for i in common if sa[i] > sb[i]]
    b_better = [i for i in common if sb[i] > sa[i]]

    def side(name: str, runs: list[dict[str, Graded]], s: dict[str, float]) -> PooledSide:
        tokens = sum(r[i].total_tokens for r in runs for i in common) / (len(runs) * len(common))
        return PooledSide(name=name, runs=len(runs), correct_per_run=[sum(r[i].correct for i in common) for r in runs],
                          mean_accuracy=sum(s.values()) / len(common), interval=_bootstrap_interval(list(s.values())),
                          tokens_per_problem=tokens)

    return Pooled(problems=len(common), a=side(names[0], a_runs, sa), b=side(names[1], b_runs, sb),
                  a_better=len(a_better), b_better=len(b_better), ties=len(common) - len(a_better) - len(b_better),
                  p_value=mcnemar_exact_p(len(a_better), len(b_better)),
                  a_better_ids=a_better, b_better_ids=b_better)


def compare_pooled_dirs(dirs_a: list[Path], dirs_b: list[Path]) -> Pooled:
    return compare_pooled([_load_run(d) for d in dirs_a], [_load_run(d) for d in dirs_b], _names(dirs_a[0], dirs_b[0]))


def pooled_markdown(c: Pooled) -> str:
    def row(s: PooledSide) -> str:
        lo, hi = s.interval
        runs = " + ".join(str(k) for k in s.correct_per_run)
        return (f"| {s.name} | {s.runs} | {runs} (of {c.problems} each) | {s.mean_accuracy:.1%} | {lo:.0%}–{hi:.0%} | "
                f"{s.tokens_per_problem:.0f} |")

    verdict = _verdict(c.p_value, c.a.name, c.b.name, c.b_better > c.a_better)
    return "\n".join([
        f"# {c.a.name} against {c.b.name}, {c.a.runs} and {c.b.runs} runs, on the {c.problems} problems all graded",
        "",
        "| system | runs | correct per run | mean accuracy | 95% interval (over problems) | tokens / problem |",
        "|---|---|---|---|---|---|",
        row(c.a), row(c.b),
        "",
        f"Per problem, the share of runs right: higher for {c.a.name} on {c.a_better}, for {c.b.name} on "
        f"{c.b_better}, equal on {c.ties}. Exact sign test p = {c.p_value:.3g}: {verdict}.",
        "",
        f"{c.a.name} higher: {', '.join(c.a_better_ids) or '-'}",
        f"{c.b.name} higher: {', '.join(c.b_better_ids) or '-'}",
        "",
    ])


def pooled_to_json(c: Pooled) -> str:
    return json.dumps(asdict(c), indent=2)

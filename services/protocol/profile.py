"""Profiles: the protocol's per-task settings and prompt sets, read from YAML files.

Users add a profile by dropping a YAML file into a directory named by CONCLAVE_PROFILES_DIRS (searched
before the built-in `services/protocol/profiles/`); no code changes. A profile's prompts come from the first of its
`prompts` sets that has the role's file, under `prompts/` beside the profile files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

import yaml

from conclave.v1 import problem_pb2

BUILTIN_DIR = Path(__file__).resolve().parent / "profiles"
DEFAULT_FOR_KIND = {
    problem_pb2.PROBLEM_KIND_MATH: "math500",
    problem_pb2.PROBLEM_KIND_MULTIPLE_CHOICE: "gpqa",
    problem_pb2.PROBLEM_KIND_CODE: "humaneval",
    problem_pb2.PROBLEM_KIND_OPEN_ENDED: "open",
}
# none; tests (code against tests); check (a model-written check of a math or choice answer)
EXECUTORS = ("none", "tests", "check")
# team (the paper: the solver's own prompt, persona, CEO direction and budget); single (the solver's first
# draft is asked exactly as the single agent is: its prompt and budget, nothing of the team)
FIRST_DRAFTS = ("team", "single")
# last (the paper: the final answer is the team's last solution); vote (the majority, by math-verify
# equivalence, over the answers the team produced: each solver draft or revision that changed its answer,
# and each value a check program computed in the sandbox; ceo/answer_vote.py)
FINAL_ANSWERS = ("last", "vote")
MAX_CHECK_PROGRAMS = 8  # check_programs, in a profile file or a problem's override
_VAR = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")
# A profile is named by a file stem; a name that could leave the profile directories is not looked up.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class ProfileError(ValueError):
    pass


@dataclass(frozen=True)
class Prompt:
    system: str
    user: str

    def render(self, **values: object) -> list[tuple[str, str]]:
        return [("system", _fill(self.system, values).strip()), ("user", _fill(self.user, values).strip())]


def _fill(text: str, values: dict[str, object]) -> str:
    # Values are inserted verbatim: problem text full of LaTeX braces and $ signs stays intact.
    return _VAR.sub(lambda m: str(values.get(m.group(1), "")), text)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    kind: str
    prompts: tuple[str, ...]
    answer_format: str
    initial_n: int = 2
    n_cap: int = 3
    n_min: int = 2
    max_turns: int = 2
    critic_rounds: int = 3
    executor: str = "none"
    budget_menu: tuple[int, ...] = (2048, 4096, 8192, 16384, 32000)
    # Tokens (prompt + completion, every call) one problem may spend; a publisher may ask for less or, up
    # to the operator maximum (CONCLAVE_LIMIT_MAX_TOTAL_TOKENS), more. Every built-in profile sizes its own.
    token_ceiling: int = 200_000
    temperature: float = 0.7
    top_p: float = 0.95
    parse_retries: int = 2
    honour_stop: bool = True
    # Code: accept a turn only if the executor's tests passed too, not on the evaluator's word alone.
    # Off in the paper's protocol; a small evaluator accepts code whose tests fail (docs/results.md).
    require_passing_tests: bool = False
    # executor: check (math, multiple choice): a check that contradicts the solution blocks the
    # evaluator's acceptance; with check_rebuttal, an evaluator that answers the contradiction (a
    # "Check:" line) may accept anyway. Both depart from the paper (the *-verified profiles).
    check_rebuttal: bool = False
    # Ablations (docs/results.md, "Where the team loses right answers"); the paper's values by default.
    solver_sees_direction: bool = True  # False: the CEO's direction reaches the critics, not the solver
    neutral_personas: bool = False  # True: no recruiter call; the solver and critics get generic personas
    critic_revision: bool = True  # False: critics review once, and the solver never revises
    # single: the solver's first draft is the single agent's answer (the same prompt and token budget as
    # `conclave eval --mode single`), so the team starts from the single agent's distribution; the
    # anchor measurement lost every right answer in the first draft (docs/results.md). Departs from the
    # paper (the *-verified profiles).
    first_draft: str = "team"
    # vote: the final answer is the majority over the team's answers and the checks' computed values
    # (a computed value wins a tie), not the last solution; the anchor audit found the checks computing
    # right values the solver's revisions ignored (docs/results.md). Departs from the paper
    # (math500-grounded).
    final_answer: str = "last"
    # executor: check: a check program that prints no `ANSWER:` line answers with its last printed line
    # (program-of-thought style); the CPU anchor's programs computed 14/3 and printed it bare.
    check_last_line: bool = False
    # executor: check: independent check programs per check step, asked at once. The first conclusive one
    # is the check the team and the evaluator hear; with final_answer: vote, every computed value votes.
    check_programs: int = 1
    # Open-ended reports with fixed sections (ceo/report.py): a report that lacks one, or was cut off before
    # its END OF REPORT line, is not accepted, and the Result carries the parsed report.
    structured_report: bool = False
    reasoning: bool = False
    solver_memory: int = 5
    critic_memory: int = 3
    role_max_tokens: dict[str, int] = field(default_factory=dict)
    prompt_dir: Path = BUILTIN_DIR / "prompts"

    @property
    def k_min(self) -> int:
        return min(self.budget_menu)

    @property
    def k_max(self) -> int:
        return max(self.budget_menu)

    def runs_executor(self, kind: str) -> bool:
        """Whether this profile's executor has work for a problem of `kind` (tests: code; check: math and
        multiple choice); the CEO schedules the step and the executor role serves it by this one rule."""
        return (self.executor == "tests" and kind == "code") or \
            (self.executor == "check" and kind in ("math", "multiple_choice"))

    def max_tokens_for(self, role: str) -> int:
        defaults = {"ceo": 512, "recruiter": 512, "evaluator": 1024, "executor": 1024}
        return int(self.role_max_tokens.get(role, defaults.get(role, 1024)))

    def prompt(self, role: str) -> Prompt:
        return _load_prompt(self.prompt_dir, self.prompts, role)

    def fragment(self, name: str, **values: object) -> str:
        """A piece of prompt text from the first of the profile's sets whose `fragments.md` has a
        `=== name ===` section (stripped), filled in like a prompt; the values are kept verbatim, and callers
        add the blank lines around it."""
        return _fill(_load_fragment(self.prompt_dir, self.prompts, name), values)


@cache
def _load_prompt(prompt_dir: Path, sets: tuple[str, ...], role: str) -> Prompt:
    for name in sets:
        path = prompt_dir / name / f"{role}.md"
        if path.exists():
            return parse_prompt_file(path)
    raise ProfileError(f"no prompt for role {role!r} in sets {list(sets)} under {prompt_dir}")


@cache
def _load_fragment(prompt_dir: Path, sets: tuple[str, ...], name: str) -> str:
    for set_name in sets:
        path = prompt_dir / set_name / "fragments.md"
        if path.exists():
            sections = _sections(path)
            if name in sections:
                return sections[name]
    raise ProfileError(f"no prompt fragment {name!r} in sets {list(sets)} under {prompt_dir}")


def _sections(path: Path) -> dict[str, str]:
    parts = re.split(r"^=== ([a-z_]+) ===\s*$", path.read_text(encoding="utf-8"), flags=re.M)
    return {name: text.strip() for name, text in zip(parts[1::2], parts[2::2], strict=False)}


def parse_prompt_file(path: Path) -> Prompt:
    text = path.read_text(encoding="utf-8")
    parts = re.split(r"^=== (system|user) ===\s*$", text, flags=re.M)
    sections = dict(zip(parts[1::2], parts[2::2], strict=False))
    if "user" not in sections:
        raise ProfileError(f"{path}: needs a '=== user ===' section")
    return Prompt(system=sections.get("system", "").strip(), user=sections["user"].strip())


def search_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("CONCLAVE_PROFILES_DIRS", "").split(os.pathsep) if p]
    return [*extra, BUILTIN_DIR]


def load_file(path: Path) -> Profile:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from exc
    known = set(Profile.__dataclass_fields__) - {"prompt_dir"}
    unknown = set(doc) - known
    if unknown:
        raise ProfileError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    for key in ("name", "kind", "prompts"):
        if key not in doc:
            raise ProfileError(f"{path}: missing key {key!r}")
    prompt_dir = path.parent / "prompts"
    if not prompt_dir.exists():
        prompt_dir = BUILTIN_DIR / "prompts"
    doc["prompts"] = tuple(doc["prompts"])
    doc["budget_menu"] = tuple(int(k) for k in doc.get("budget_menu", Profile.budget_menu))
    doc.setdefault("description", "")
    doc.setdefault("answer_format", "")
    profile = Profile(prompt_dir=prompt_dir, **doc)
    if profile.executor not in EXECUTORS:
        raise ProfileError(f"{path}: executor {profile.executor!r} is not one of {', '.join(EXECUTORS)}")
    if profile.first_draft not in FIRST_DRAFTS:
        raise ProfileError(f"{path}: first_draft {profile.first_draft!r} is not one of {', '.join(FIRST_DRAFTS)}")
    if not 1 <= profile.check_programs <= MAX_CHECK_PROGRAMS:
        raise ProfileError(f"{path}: check_programs must be 1 to {MAX_CHECK_PROGRAMS}")
    if profile.final_answer not in FINAL_ANSWERS:
        raise ProfileError(f"{path}: final_answer {profile.final_answer!r} is not one of {', '.join(FINAL_ANSWERS)}")
    if profile.final_answer == "vote" and profile.kind not in ("math", "multiple_choice"):
        raise ProfileError(f"{path}: final_answer vote needs a math or multiple_choice profile, not {profile.kind}")
    if not 1 <= profile.n_min <= profile.initial_n <= profile.n_cap:
        raise ProfileError(f"{path}: need 1 <= n_min <= initial_n <= n_cap")
    if profile.token_ceiling <= 0:
        raise ProfileError(f"{path}: token_ceiling must be a positive number of tokens")
    return profile


@cache
def _load_cached(path: Path, mtime: float) -> Profile:
    return load_file(path)


def load(name: str) -> Profile:
    if not NAME_RE.match(name):
        raise ProfileError(f"{name[:40]!r} is not a profile name (letters, digits, _ and -)")
    for directory in search_dirs():
        path = directory / f"{name}.yaml"
        if path.exists():
            return _load_cached(path, path.stat().st_mtime)
    raise ProfileError(f"unknown profile {name!r}; available: {', '.join(available())}")


def available() -> list[str]:
    names: set[str] = set()
    for directory in search_dirs():
        names.update(p.stem for p in directory.glob("*.yaml"))
    return sorted(names)


def for_problem(problem: problem_pb2.Problem) -> Profile:
    """The profile a problem names, else its kind's default (without its metadata overrides)."""
    return load(problem.profile or DEFAULT_FOR_KIND.get(problem.kind, "open"))


def resolve(problem: problem_pb2.Problem, name: str = "") -> Profile:
    """The profile a problem runs under, its `profile.<field>` metadata applied: the one rule intake, the
    CEO and the roles share. `name` (a role task's profile, the one the CEO chose) wins over the problem's.
    Files are read once per change (load is cached by mtime), so a role resolving it per task is cheap."""
    return with_overrides(load(name) if name else for_problem(problem), dict(problem.metadata))


def cut_menu(menu: tuple[int, ...], cap: int) -> tuple[int, ...]:
    """The budgets a deployment can serve: those up to `cap` (0: all), or just `cap` if none is."""
    if not cap:
        return menu
    return tuple(k for k in menu if k <= cap) or (cap,)


OVERRIDE_PREFIX = "profile."
_INT_OVERRIDES = ("critic_rounds", "max_turns", "n_cap", "n_min", "initial_n", "parse_retries", "check_programs")
_BOOL_OVERRIDES = ("require_passing_tests", "check_rebuttal", "solver_sees_direction", "neutral_personas",
                   "critic_revision", "check_last_line")
_CHOICE_OVERRIDES = {"first_draft": FIRST_DRAFTS, "final_answer": FINAL_ANSWERS}


def with_overrides(profile: Profile, metadata: dict[str, str]) -> Profile:
    """Applies `profile.<field>` keys of a problem's metadata (what `conclave eval --sweep` sets).

    `profile.k_cap` cuts the budget menu; `profile.n_min` = `profile.n_cap` fixes the team size.
    """
    changes: dict[str, object] = {}
    for key, value in metadata.items():
        if not key.startswith(OVERRIDE_PREFIX):
            continue
        name = key.removeprefix(OVERRIDE_PREFIX)
        if name in _BOOL_OVERRIDES:
            if value.lower() not in ("true", "false", "1", "0"):
                raise ProfileError(f"metadata {key}={value!r} is not true or false")
            changes[name] = value.lower() in ("true", "1")
            continue
        if name in _CHOICE_OVERRIDES:
            if value not in _CHOICE_OVERRIDES[name]:
                raise ProfileError(f"metadata {key}={value!r} is not one of {', '.join(_CHOICE_OVERRIDES[name])}")
            changes[name] = value
            continue
        try:
            number = int(value)
        except ValueError as exc:
            raise ProfileError(f"metadata {key}={value!r} is not a whole number") from exc
        if name in _INT_OVERRIDES:
            changes[name] = number
        elif name == "k_cap":
            changes["budget_menu"] = cut_menu(profile.budget_menu, number)
        else:
            known = ", ".join((*_INT_OVERRIDES, *_BOOL_OVERRIDES, *_CHOICE_OVERRIDES, "k_cap"))
            raise ProfileError(f"metadata {key} overrides nothing; known: {known}")
    if not changes:
        return profile
    if not 1 <= int(changes.get("check_programs", 1)) <= MAX_CHECK_PROGRAMS:  # type: ignore[arg-type]
        raise ProfileError(f"metadata {OVERRIDE_PREFIX}check_programs={changes['check_programs']} is not 1 to "
                           f"{MAX_CHECK_PROGRAMS}")
    if not any(k in changes for k in ("n_min", "n_cap", "initial_n")):
        return replace(profile, **changes)  # type: ignore[arg-type]
    n_min = int(changes.get("n_min", profile.n_min))  # type: ignore[arg-type]
    n_cap = int(changes.get("n_cap", max(profile.n_cap, n_min)))  # type: ignore[arg-type]
    changes.setdefault("initial_n", min(max(profile.initial_n, n_min), n_cap))
    changes["n_cap"] = n_cap
    out = replace(profile, **changes)  # type: ignore[arg-type]
    if not 1 <= out.n_min <= out.initial_n <= out.n_cap:
        raise ProfileError(f"team size overrides give n_min={out.n_min}, initial_n={out.initial_n}, "
                           f"n_cap={out.n_cap}; need 1 <= n_min <= initial_n <= n_cap")
    return out

"""Where does the team lose right answers? Reads a team eval run, its archived trajectories and
(optionally) a single-agent run of the same benchmark, and reports per problem the single agent's
answer, the team's first draft, every later solution, the final answer, and the step at which a right
answer became wrong (first_draft, revision, new_turn), with the evaluator's and the CEO's part.

  conclave audit out/eval/math500-mas --archive .state/archive --single out/eval/math500-single

Writes RUN/audit.md and RUN/audit.json (or --out DIR). Needs no running stack.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="the --out directory of a team (mas) `conclave eval` run")
    p.add_argument("--archive", type=Path, default=Path(".state/archive"),
                   help="the archiver's directory of trajectories (conclave up: STATE_DIR/archive; default .state/archive)")
    p.add_argument("--single", type=Path, default=None,
                   help="the --out directory of a single-agent run of the same benchmark, to compare with")
    p.add_argument("--out", type=Path, default=None, help="where audit.md and audit.json go (default: RUN)")


def run(args: argparse.Namespace) -> int:
    from services.evaluation.audit import AuditError, audit_run, markdown, write

    try:
        audits = audit_run(args.run, args.archive, args.single)
    except AuditError as exc:
        print(f"conclave audit: {exc}")
        return 2
    summary = write(args.out or args.run, audits)
    print(markdown(audits, summary))
    print(f"written to {(args.out or args.run) / 'audit.md'} and audit.json")
    return 0

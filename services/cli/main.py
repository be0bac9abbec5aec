"""The `conclave` command. Each subcommand lives in its own module: services/cli/<name>_cmd.py, and
`infer` in services/inference/cli.py, next to the gateway it calls."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Every module is imported to build the parser (its add_arguments), so a
# module keeps its heavy imports inside its run().
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("services.cli.up_cmd", "start the whole stack locally (NATS, model pod, every service)"),
    "status": ("services.cli.status_cmd", "the work each service did, the model pods, NATS and JetStream"),
    "serve": ("services.cli.serve_cmd", "run one service in the foreground (the container entrypoint)"),
    "solve": ("services.cli.solve_cmd", "solve one problem with the agent team and watch it live"),
    "submit": ("services.cli.submit_cmd", "publish a JSONL batch of problems and write their results"),
    "infer": ("services.inference.cli", "stream a completion through the inference gateway (checks your pods)"),
    "eval": ("services.cli.eval_cmd", "run a benchmark, grade it, write a report (mas or single agent)"),
    "compare": ("services.cli.compare_cmd", "compare two eval runs, paired, with intervals and a significance test"),
    "audit": ("services.cli.audit_cmd", "find where a team run lost right answers, from its archived trajectories"),
}

EPILOG = """\
examples:
  conclave up                      # start NATS and every service; Ctrl-C stops them all
  conclave status                  # services and their work, model pods, NATS/JetStream
  conclave serve intake            # one service, as a Kubernetes Deployment runs it
  conclave solve "What is 7*6?" --profile math500      # watch the agent team live
  conclave submit problems.jsonl --out results.jsonl  # a batch, with a progress bar
  conclave eval --benchmark humaneval --limit 40 --mode single --out out/he-single
  conclave eval --benchmark humaneval --limit 40 --mode mas --out out/he-mas
  conclave compare out/he-single out/he-mas          # is the team better, beyond chance?
  conclave eval --benchmark math500 --limit 40 --mode vote --k auto --match out/m-mas --out out/m-vote
  conclave audit out/m-mas --archive .state/archive --single out/m-single   # where were right answers lost?

Every service setting can come from the environment (CONCLAVE_NATS_URL=nats://host:4222, ...) or from a
YAML file named by CONCLAVE_CONFIG; the commands' --nats-url defaults to CONCLAVE_NATS_URL too.
`conclave COMMAND --help` gives each command's options.
"""


def version() -> str:
    """The installed package's version (pyproject.toml is the one place it is written)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("conclave")
    except PackageNotFoundError:
        return "unknown (not installed; run `make setup`)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conclave",
        description="Conclave: teams of LLM agents that reason together, run over NATS and gRPC.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"conclave {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

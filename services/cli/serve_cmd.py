"""Run one Conclave service in the foreground until SIGTERM/SIGINT, then drain.

This is the entrypoint of every Kubernetes Deployment and of every process `conclave up` starts.
Settings come from CONCLAVE_* environment variables or the YAML file named by CONCLAVE_CONFIG.
"""

from __future__ import annotations

import argparse

from services import registry


def add_arguments(p: argparse.ArgumentParser) -> None:
    choices = ", ".join(f"{n} ({e.help})" for n, e in registry.SERVICES.items())
    p.add_argument("service", metavar="SERVICE", help=f"one of: {choices}")


def run(args: argparse.Namespace) -> int:
    from services.runtime.lifecycle import main

    build = registry.get(args.service).build()
    return main(build())

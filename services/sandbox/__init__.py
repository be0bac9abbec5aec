"""Run untrusted Python code in an isolated, resource-limited child process."""

from services.sandbox.limits import SandboxLimits, SandboxResult
from services.sandbox.runner import run_python, run_python_sync

__all__ = ["SandboxLimits", "SandboxResult", "run_python", "run_python_sync"]

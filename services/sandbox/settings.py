"""Operator settings of the sandbox (environment: CONCLAVE_SANDBOX_*)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SandboxSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONCLAVE_SANDBOX_", extra="ignore")

    allow_weak: bool = Field(
        False,
        description="Run code even where only the weak 'hooks-only' mode works (no user/mount/pid/net "
                    "namespaces: audit hooks, seccomp and rlimits only; not a security boundary). Off: such "
                    "runs are refused with status 'refused'.",
    )

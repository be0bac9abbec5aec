"""Settings of the OpenAI-compatible door (every field also as CONCLAVE_DOOR_<FIELD>)."""

from __future__ import annotations

from pydantic import Field

from services.runtime.settings import RuntimeSettings


class DoorSettings(RuntimeSettings):
    door_host: str = Field("127.0.0.1", description="address the HTTP API listens on (0.0.0.0 in a container)")
    door_port: int = Field(8090, description="port of /v1/chat/completions and /v1/models (0: any free port)")
    door_api_keys: tuple[str, ...] = Field(
        (), description="bearer keys a caller must send (Authorization: Bearer KEY); empty: no auth, which the "
                        "door only accepts on a loopback address")
    door_timeout_s: float = Field(3600.0, description="how long one request waits for the team's result")
    door_default_profile: str = Field("open", description="profile of the model name `conclave`")
    door_max_body_bytes: int = Field(1 << 20, description="largest request body accepted")

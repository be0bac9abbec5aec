"""The CEO service: consumes the PROBLEMS work queue and runs each problem's loop.

Replicas share the queue. A problem's message stays unacked (kept alive by in-progress acks) while its
loop runs, and its state is in KV after every step, so when a replica dies another one gets the
redelivered message and resumes from the last completed step.
"""

from __future__ import annotations

import logging
import time

from pydantic import Field

from ceo import profile as profiles
from ceo.loop import ProblemRun, RunConfig
from ceo.metrics import CeoMetrics
from conclave.v1 import problem_pb2
from services.agents.llm import LlmClient
from services.bus import topology
from services.bus.codec import PayloadError, decode
from services.bus.headers import REPLY_TO
from services.bus.replies import error_result, publish_result
from services.intake.validate import problem_errors
from services.runtime import tracing
from services.runtime.lifecycle import Runtime, Service
from services.runtime.logs import problem_id_var
from services.runtime.settings import RuntimeSettings
from services.runtime.worker import Rejected, WorkContext

log = logging.getLogger(__name__)


class CeoSettings(RuntimeSettings):
    inference_addr: str = Field("127.0.0.1:50051", description="host:port of the inference gateway")
    concurrency: int = Field(32, description="problems one replica runs at once")
    step_timeout_s: float = Field(900.0, description="how long a step waits for its role replies")
    k_cap: int = Field(0, description="cap on the per-agent budget K, for pods with small contexts (0 = none)")
    honour_stop: bool | None = Field(None, description="override the profiles' honour_stop (paper code: false)")
    default_model: str = ""
    serial_critics: bool = Field(False, description="ask critics one after another, as the paper's code does")


class CeoService(Service[CeoSettings]):
    name = "ceo"
    description = "Runs each problem's multi-agent loop; decides turns, team size, direction and budgets."

    async def setup(self, rt: Runtime[CeoSettings]) -> None:
        self._rt = rt
        self._llm = LlmClient(self.settings.inference_addr)
        rt.on_close(self._llm.close)
        self._kv = await rt.js.key_value(topology.PROBLEM_STATE.bucket)
        self._metrics = CeoMetrics(rt.registry)
        # Start times of the problems this replica runs, read at scrape time for the "stuck" alert.
        self._running: dict[str, float] = {}
        self._metrics.oldest.set_function(
            lambda: time.time() - min(self._running.values()) if self._running else 0.0)
        self._cfg = RunConfig(step_timeout_s=self.settings.step_timeout_s, k_cap=self.settings.k_cap,
                              honour_stop=self.settings.honour_stop, default_model=self.settings.default_model,
                              serial_critics=self.settings.serial_critics)
        rt.add_worker(topology.CEO_CONSUMER, self.handle)

    async def handle(self, ctx: WorkContext) -> None:
        headers = dict(ctx.msg.headers or {})
        reply_to = headers.get(REPLY_TO, "")
        as_json = headers.get("Conclave-Reply-Json") == "1"
        try:
            problem = decode(problem_pb2.Problem, ctx.msg.data, headers)
        except PayloadError as exc:
            raise Rejected("bad_payload", str(exc)) from exc
        problem_id_var.set(problem.id)
        # Publishers may write to the queue directly; check again what intake checks.
        errors = problem_errors(problem)
        try:
            profile = profiles.with_overrides(profiles.for_problem(problem), dict(problem.metadata))
        except profiles.ProfileError as exc:
            errors.append(str(exc))
        if errors:
            message = "; ".join(errors)
            await publish_result(self._rt.nc, self._rt.js, error_result(problem.id, "invalid_problem", message,
                                 ctx.msg.subject), reply_to=reply_to, as_json=as_json)
            raise Rejected("invalid_problem", message, problem.id)
        run = ProblemRun(nc=self._rt.nc, js=self._rt.js, kv=self._kv, llm=self._llm, metrics=self._metrics,
                         cfg=self._cfg, problem=problem, profile=profile, reply_to=reply_to, as_json=as_json,
                         keepalive=ctx.in_progress)
        self._metrics.active.inc()
        self._running[problem.id] = time.time()
        # A redelivered problem (after a crash) continues the trace its intake started.
        with tracing.consuming(self.name, "ceo.problem", headers, profile=profile.name,
                               delivery=ctx.deliveries):
            try:
                await run.run()
            finally:
                self._metrics.active.dec()
                self._running.pop(problem.id, None)


def build(settings: CeoSettings | None = None) -> CeoService:
    return CeoService(settings or CeoSettings())

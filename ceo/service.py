"""The CEO service: consumes the PROBLEMS work queue and runs each problem's loop.

Replicas share the queue. A problem's message stays unacked (kept alive by in-progress acks) while its
loop runs, and its state is in KV after every step, so when a replica dies another one gets the
redelivered message and resumes from the last completed step.
"""

from __future__ import annotations

import asyncio
import logging
import time

from pydantic import Field

from ceo.grading import MathGrader
from ceo.loop import ProblemRun, RunConfig
from ceo.metrics import CeoMetrics
from ceo.steps import StepTiming
from conclave.v1 import problem_pb2
from services.bus import topology
from services.bus.error_codes import SubmitError
from services.bus.headers import REPLY_JSON, REPLY_TO
from services.bus.replies import answer, error_result
from services.inference.client import LlmClient
from services.intake.validate import default_limits, problem_errors
from services.protocol import profile as profiles
from services.runtime import tracing
from services.runtime.lifecycle import Runtime, Service
from services.runtime.logs import problem_id_var
from services.runtime.settings import RuntimeSettings
from services.runtime.worker import Rejected, WorkContext
from services.security.grpc_tls import gateway_credentials

log = logging.getLogger(__name__)


class CeoSettings(RuntimeSettings):
    concurrency: int = Field(32, description="problems one replica runs at once")
    step_timeout_s: float = Field(900.0, description="how long a step waits for its role replies before it "
                                  "fails (the problem ends with stop_reason error, never a silent verdict)")
    step_warn_s: float = Field(60.0, description="a step waiting longer logs a WARNING and counts in "
                               "conclave_ceo_slow_steps")
    step_retry_s: float = Field(300.0, description="a step waiting this long re-publishes its missing tasks "
                                "(again every step_retry_s; 0 = never)")
    reply_recheck_s: float = Field(5.0, description="while a step waits, how often it re-reads its stored "
                                   "replies (besides after every reconnect)")
    k_cap: int = Field(0, description="cap on the per-agent budget K, for pods with small contexts (0 = none)")
    honour_stop: bool | None = Field(None, description="override the profiles' honour_stop (paper code: false)")
    default_model: str = ""
    grade_timeout_s: float = Field(30.0, description="longest a math answer is graded before it is left "
                                   "ungraded (correct -1)")
    serial_critics: bool = Field(False, description="ask critics one after another, as the paper's code does")


class CeoService(Service[CeoSettings]):
    name = "ceo"
    description = "Runs each problem's multi-agent loop; decides turns, team size, direction and budgets."

    async def setup(self, rt: Runtime[CeoSettings]) -> None:
        self._rt = rt
        self._llm = LlmClient(self.settings.inference_addr, gateway_credentials(self.settings))
        rt.on_close(self._llm.close)
        self._kv = await rt.js.key_value(topology.PROBLEM_STATE.bucket)
        self._metrics = CeoMetrics(rt.registry)
        # Start times of the problems this replica runs, read at scrape time for the "stuck" alert.
        self._started: dict[str, float] = {}
        self._metrics.oldest.set_function(
            lambda: time.time() - min(self._started.values()) if self._started else 0.0)
        self._limits = default_limits()
        # Math is graded in a process of its own, never on this event loop (ceo/grading.py).
        self._grader = MathGrader(self.settings.grade_timeout_s)
        rt.on_close(self._grader.close)
        step = StepTiming(timeout_s=self.settings.step_timeout_s, warn_s=self.settings.step_warn_s,
                          retry_s=self.settings.step_retry_s, recheck_s=self.settings.reply_recheck_s)
        # Problems this replica is running. A redelivery of one of them (its in-progress acks could not
        # reach NATS during an outage) joins the run instead of starting a second one.
        self._running: dict[str, asyncio.Future[bool]] = {}
        self._cfg = RunConfig(step=step, k_cap=self.settings.k_cap,
                              honour_stop=self.settings.honour_stop, default_model=self.settings.default_model,
                              serial_critics=self.settings.serial_critics,
                              max_total_tokens=self._limits.max_total_tokens,
                              model_call_timeout_s=self.settings.model_call_timeout_s)
        rt.add_worker(topology.CEO_CONSUMER, problem_pb2.Problem, self.handle)

    async def handle(self, ctx: WorkContext, problem: problem_pb2.Problem) -> None:
        headers = dict(ctx.msg.headers or {})
        reply_to = headers.get(REPLY_TO, "")
        as_json = headers.get(REPLY_JSON) == "1"
        problem_id_var.set(problem.id)
        # Publishers may write to the queue directly; check again what intake checks.
        errors = problem_errors(problem, self._limits)
        if errors:
            message = "; ".join(errors)
            # Answered and dead-lettered, but never stored as the id's result: a valid problem may own it.
            if reply_to:
                await answer(self._rt.nc, reply_to, error_result(problem.id, SubmitError.INVALID_PROBLEM, message,
                             ctx.msg.subject), as_json=as_json)
            raise Rejected(SubmitError.INVALID_PROBLEM, message, problem.id)
        profile = profiles.resolve(problem)
        running = self._running.get(problem.id)
        if running is not None:
            self._metrics.duplicate_deliveries.inc()
            log.warning("problem delivered again while it runs here; joining the run")
            if not await asyncio.shield(running):
                # Retried like any failure: the next delivery resumes from the saved state.
                raise RuntimeError("the run this delivery joined failed")
            return
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._running[problem.id] = done
        ok = False
        try:
            await self._run(ctx, problem, profile, reply_to, as_json)
            ok = True
        finally:
            del self._running[problem.id]
            done.set_result(ok)

    async def _run(self, ctx: WorkContext, problem: problem_pb2.Problem, profile: profiles.Profile,
                   reply_to: str, as_json: bool) -> None:
        run = ProblemRun(nc=self._rt.nc, js=self._rt.js, kv=self._kv, llm=self._llm, metrics=self._metrics,
                         cfg=self._cfg, problem=problem, profile=profile, reply_to=reply_to, as_json=as_json,
                         keepalive=ctx.in_progress, grader=self._grader)
        self._metrics.active.inc()
        self._started[problem.id] = time.time()
        # A redelivered problem (after a crash) continues the trace its intake started.
        with tracing.consuming(self.name, "ceo.problem", ctx.msg.headers, profile=profile.name,
                               delivery=ctx.deliveries):
            try:
                await run.run()
            finally:
                self._metrics.active.dec()
                self._started.pop(problem.id, None)


def build(settings: CeoSettings | None = None) -> CeoService:
    return CeoService(settings or CeoSettings())

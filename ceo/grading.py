"""Grading a math answer off the CEO's event loop, with a hard time limit.

Symbolic comparison (sympy through math-verify) can take seconds on a short reference; on the event loop
that starves every other problem's steps and keepalives. A one-process pool does it instead: in the
pool's main thread math-verify's own SIGALRM limits apply, and a call that still overruns `timeout_s`
is abandoned by killing the pool (the next call starts a fresh one) and graded -1 (ungraded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from services.evaluation.graders import grade_math
from services.protocol.answers import extract_boxed

log = logging.getLogger(__name__)

# References longer than this are not graded (-1): no real answer key is this long.
MAX_REFERENCE_CHARS = 1_000


class MathGrader:
    def __init__(self, timeout_s: float = 30.0) -> None:
        self._timeout_s = timeout_s
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the CEO process has gRPC threads, and forking them is unsafe.
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    async def grade(self, answer: str, reference: str) -> int:
        """1 or 0; -1 when it cannot be graded in time (or the reference is oversized)."""
        if len(reference) > MAX_REFERENCE_CHARS:
            return -1
        boxed = extract_boxed(answer)
        if boxed is not None and boxed.strip() == (extract_boxed(reference) or reference).strip():
            return 1  # the same text is the same answer: no need for sympy
        for attempt in (1, 2):
            try:
                fut = asyncio.get_running_loop().run_in_executor(self._executor(), grade_math, answer, reference)
                return int(await asyncio.wait_for(fut, self._timeout_s))
            except TimeoutError:
                log.warning("math grading took over %.0fs; left ungraded", self._timeout_s)
                self._kill()
                return -1
            except BrokenProcessPool:
                # Another call's overrun killed the pool under this one: once more, on a fresh pool.
                self._pool = None
                if attempt == 2:
                    return -1
        return -1

    def _kill(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for proc in list(getattr(pool, "_processes", {}).values()):  # the stuck worker must really stop
            with contextlib.suppress(Exception):
                proc.kill()
        pool.shutdown(wait=False)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

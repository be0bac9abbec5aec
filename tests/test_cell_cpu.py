"""The gateway benchmark's CPU per cell (benchmarks/cell_cpu.py) and its rounds kept apart: what the next GPU
lease reads to tell a saturated gateway worker from saturated load generators, and a real gap from noise."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

from benchmarks.cell_cpu import CellCpu, mean_cores, snapshot
from benchmarks.common import Run, Sample
from benchmarks.gpu_gateway import table, throughput

# A parent that starts a busy child and waits for it: the child is not a watched pid, only below one.
PARENT = ("import subprocess, sys\n"
          "subprocess.run([sys.executable, '-c', 'import time\\nt = time.monotonic()\\n"
          "while time.monotonic() - t < 1.5: pass'])\n")


def test_a_child_of_a_watched_process_counts_for_its_role_and_as_the_roles_busiest_process():
    cpu = CellCpu()
    parent = subprocess.Popen([sys.executable, "-c", PARENT])
    try:
        cpu.watch("gateway", [parent.pid])
        time.sleep(0.4)  # the child is running by now
        before, t0 = snapshot(), time.monotonic()
        time.sleep(0.8)
        cores = cpu.cores(before, snapshot(), time.monotonic() - t0)
    finally:
        parent.wait(timeout=60)
    assert cores["gateway"] >= 0.3  # a busy loop holds most of a core, even on a busy 2-core runner
    assert cores["gateway_busiest"] >= 0.3
    assert cores["gateway_busiest"] <= cores["gateway"]


def test_cores_are_per_role_and_unwatched_processes_go_by_command_name():
    hz = os.sysconf("SC_CLK_TCK")
    cpu = CellCpu()
    cpu.watch("gateway", [10])
    cpu.watch("clients", [20, 21])
    before = {10: (1, "python3", 0), 11: (10, "python3", 0), 20: (1, "python3", 0), 21: (1, "python3", hz),
              30: (1, "VLLM::EngineCor", 0)}
    # pid 12 (a gateway worker) started between the snapshots: all its time counts
    after = {10: (1, "python3", 2 * hz), 11: (10, "python3", 8 * hz), 12: (10, "python3", 6 * hz),
             20: (1, "python3", 3 * hz), 21: (1, "python3", 2 * hz), 30: (1, "VLLM::EngineCor", 9 * hz)}
    # kernel workers rename themselves by their current work; they are one line
    before |= {40: (2, "kworker/0:1-events", 0), 41: (2, "kworker/1:0-mm_percpu_wq", 0)}
    after |= {40: (2, "kworker/0:1-mm_percpu_wq", hz), 41: (2, "kworker/1:0-events", hz)}
    assert cpu.cores(before, after, wall_s=10.0) == {
        "gateway": 1.6, "clients": 0.4, "VLLM::EngineCor": 0.9, "kernel threads": 0.2,
        "gateway_busiest": 0.8, "clients_busiest": 0.3}
    cells = [{"wall_s": 1.0, "cores": {"gateway": 1.0}}, {"wall_s": 3.0, "cores": {"gateway": 0.6, "x": 0.4}}]
    assert list(mean_cores(cells).items()) == [("gateway", 0.7), ("x", 0.3)]


def test_each_cell_keeps_its_rounds_apart_and_the_table_shows_the_ratio_of_each_round():
    speeds = {"bare": iter([100, 120]), "gateway": iter([90, 96])}  # tokens per request, by round

    def runner(mode):
        async def run(concurrency, requests, max_tokens):
            await asyncio.sleep(0)
            n = next(speeds[mode]) if requests == 3 else 1  # the warm-up asks 2 x the level
            return Run([Sample(0.01, n, 0.1, "a", 10, 0.01) for _ in range(requests)], wall=1.0)
        return run

    args = argparse.Namespace(levels=[2], rounds=2, waves=1, min_requests=3, max_tokens=8)
    result = asyncio.run(throughput({"bare": runner("bare"), "gateway": runner("gateway")}, args, lambda _: None,
                                    cpu=CellCpu()))
    assert [r["tokens_per_s"] for r in result["gateway"]["2"]["rounds"]] == [270.0, 288.0]
    assert result["gateway"]["2"]["tokens_per_s"] == 279.0
    assert "cores" in result["gateway"]["2"]["rounds"][0]
    text = table({"throughput": {"config": {"max_tokens": 8},
                                 "results": {"http_bare": result["bare"], "gateway_http": result["gateway"]}}})
    assert "by round: 0.900, 0.800" in text

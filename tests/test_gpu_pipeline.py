"""benchmarks/gpu/device/gpurun.py's measurements, on a CPU: what it reads from a pod's /metrics, the CPU each
process used, and which steps a short lease may skip. (The whole pipeline is rehearsed on the scripted backend
as docs/gpu.md says; these are the parts whose arithmetic the GPU records depend on.)"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import importlib.util
import json
import os
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def g(tmp_path, monkeypatch):
    """gpurun.py (a script for the device machine, not a package module), its work dir under tmp_path."""
    monkeypatch.setenv("GPURUN_DIR", str(tmp_path / "w"))
    spec = importlib.util.spec_from_file_location("gpurun_under_test", ROOT / "benchmarks/gpu/device/gpurun.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, mod)  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


class MetricsPod:
    """An HTTP server answering /metrics with whatever text the test sets, as vLLM's exposition does."""

    def __init__(self) -> None:
        pod = self
        self.text = ""

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                body = pod.text.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def exposition(gen: float, prompt: float, reqs: float, prompt_sum: float, gen_sum: float, hits: float,
               queries: float) -> str:
    # two series of one name (labels differ) are summed, as two engines' or two finished_reason's would be
    return "\n".join([
        "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
        f'vllm:generation_tokens_total{{model_name="m"}} {gen}',
        f'vllm:prompt_tokens_total{{model_name="m"}} {prompt}',
        f'vllm:request_generation_tokens_count{{model_name="m",finished_reason="stop"}} {reqs - 1}',
        'vllm:request_generation_tokens_count{model_name="m",finished_reason="length"} 1',
        f'vllm:request_generation_tokens_sum{{model_name="m"}} {gen_sum}',
        f'vllm:request_prompt_tokens_sum{{model_name="m"}} {prompt_sum}',
        f'vllm:prefix_cache_hits_total{{model_name="m"}} {hits}',
        f'vllm:prefix_cache_queries_total{{model_name="m"}} {queries}',
        'vllm:num_requests_running{model_name="m"} 7',
        'process_cpu_seconds_total 12.5',  # not vLLM's: ignored
        ""])


def test_the_pods_load_between_two_snapshots_is_tokens_sizes_and_cache_hits(g):
    pod = MetricsPod()
    try:
        pod.text = exposition(gen=1000, prompt=5000, reqs=10, prompt_sum=5000, gen_sum=1000, hits=100, queries=400)
        before = g.pod_metrics(pod.port)
        pod.text = exposition(gen=21000, prompt=45000, reqs=110, prompt_sum=45000, gen_sum=21000, hits=2100,
                              queries=4400)
        after = g.pod_metrics(pod.port)
    finally:
        pod.close()
    assert "process_cpu_seconds_total" not in after and after["vllm:num_requests_running"] == 7
    load = g.load_between(before, after, seconds=10.0)
    assert load["generated_tokens"] == 20000 and load["prompt_tokens"] == 40000
    assert load["requests"] == 100 and load["generated_tok_per_s"] == 2000.0
    assert load["mean_prompt_tokens"] == 400.0 and load["mean_generated_tokens"] == 200.0
    assert load["prefix_cache_hit_rate"] == 0.5


def test_a_pod_that_does_not_answer_gives_no_metrics_and_a_load_of_zeros(g):
    pod = MetricsPod()
    port = pod.port
    pod.close()
    pod.server.server_close()
    assert g.pod_metrics(port) == {}
    assert g.load_between({}, {}, 5.0)["mean_prompt_tokens"] == 0.0


def test_cores_used_are_summed_per_kind_of_process(g):
    hz = os.sysconf("SC_CLK_TCK")
    before = {1: ("ceo", 0), 2: ("critic", 10 * hz), 3: ("critic", 0)}
    # pid 4 started between the snapshots: all its time counts; pid 3 ended: it is not in the second snapshot
    after = {1: ("ceo", 20 * hz), 2: ("critic", 30 * hz), 4: ("critic", 10 * hz), 5: ("idle", 0)}
    assert g.cores_between(before, after, seconds=10.0) == {"critic": 3.0, "ceo": 2.0}
    own = g.cpu_ticks()
    assert os.getpid() in own and own[os.getpid()][1] >= 0


def test_a_short_lease_may_skip_a_measurement_beside_the_loop_but_not_a_step_of_the_loop(g, tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "manifest.json").write_text('{"artifacts": {}, "model": {"sha256": "0" }}')
    pipe = g.Pipeline(stage, deadline_s=60)
    soft = {name for name, _, is_soft in pipe.steps() if is_soft}
    assert soft == {"seed", "synthetic-base-team", "ablations", "audit", "base-vote", "grounded-vote", "base-others",
                    "gateway-base", "gateway-base-w2", "gateway-tuned"}
    with pytest.raises(SystemExit, match="only a measurement beside the loop"):
        pipe.go(only=["dataset"], skip=["dataset"])
    assert pipe.go(only=["gateway-tuned"], skip=["gateway-tuned"])
    assert pipe.st["steps"]["gateway-tuned"] == {"done": True, "skipped": True}


def test_the_grounded_team_runs_before_the_vote_matched_to_it_with_the_single_agent_beside(g):
    chains = g.Pipeline.groups()["grounded-vote"]
    team, vote = chains[0]
    assert team.mode == "mas" and ("--profile", g.GROUNDED_PROFILE) == team.extra
    assert vote.mode == "vote" and str(g.RUNS / team.name) in vote.extra and "auto" in vote.extra
    assert [[e.name for e in c] for c in chains[1:]] == [["base-single-all"]]


def test_the_gateway_benchmark_keeps_the_rounds_it_finished_when_its_budget_cuts_it():
    from benchmarks.common import Run, Sample
    from benchmarks.gpu_gateway import throughput

    calls = []

    async def quick(concurrency, requests, max_tokens):
        calls.append(concurrency)
        await asyncio.sleep(0)
        return Run([Sample(0.01, max_tokens, 0.1, "a", 10, 0.01) for _ in range(requests)], wall=0.5)

    async def stuck(concurrency, requests, max_tokens):
        if len(calls) > 6:  # warm-ups and the first round pass; the second round never ends
            await asyncio.Event().wait()
        return await quick(concurrency, requests, max_tokens)

    args = argparse.Namespace(levels=[1, 2], rounds=3, waves=1, min_requests=2, max_tokens=8)
    so_far: dict = {}
    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(throughput({"bare": quick, "gateway": stuck}, args, lambda _: None, so_far), 2))
    assert set(so_far) == {"bare", "gateway"} and set(so_far["gateway"]) == {"1", "2"}


def test_a_process_that_ends_inside_the_step_still_counts_its_cpu(g):
    import subprocess
    import sys as _sys
    import time

    sampler = g.CpuSampler(every=0.1)
    sampler.start()
    busy = subprocess.Popen([_sys.executable, "-c", "import time\nt = time.process_time()\n"
                             "while time.process_time() - t < 1.0: pass"])
    busy.wait(timeout=60)
    time.sleep(0.3)
    seen = sampler.finish()
    assert busy.pid in seen and seen[busy.pid][1] > 0  # gone now, yet its ticks were kept


def test_only_training_half_runs_feed_m500_and_each_held_out_team_arm_runs_repeatedly(g, tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "manifest.json").write_text('{"artifacts": {}, "model": {"sha256": "0" }}')
    pipe = g.Pipeline(stage, deadline_s=60)
    groups = pipe.groups()
    evals = {ev.name: ev for chain in groups["base-team"] for ev in chain}
    assert g.TRAIN_RUNS == ("base-mas-train", "base-mas-train2", "base-mas-train3", "base-mas-train4")
    assert all(evals[name].split == "train" for name in g.TRAIN_RUNS)
    held_out = [ev for ev in evals.values() if ev.split == "heldout"]
    assert [ev.name for ev in held_out] == ["base-mas-heldout", "base-mas-heldout2"]
    tuned = [ev for chain in groups["tuned-heldout"] for ev in chain]
    assert [ev.name for ev in tuned if ev.mode == "mas"] == ["tuned-mas-heldout", "tuned-mas-heldout2"]
    assert all(ev.split == "heldout" for ev in tuned)
    assert {name for name, _, _ in pipe.steps()} >= set(groups)


def test_an_earlier_leases_run_is_resumed_only_when_it_was_made_with_the_same_model_revision(g, tmp_path, monkeypatch):
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "manifest.json").write_text('{"artifacts": {}, "model": {"sha256": "1d9614638d18aaaa"}}')
    pipe = g.Pipeline(stage, deadline_s=60)
    same, other = pipe.proj / "earlier/same", pipe.proj / "earlier/other"
    for folder, revision in ((same, "1d9614638d18"), (other, "ffffffffffff")):
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps({"run_id": "x", "revision": revision}))
        (folder / "results.jsonl").write_text('{"id": "p1"}\n{"id": "p2"}\n')
    monkeypatch.setattr(g, "EARLIER_RUNS", {"base-vote-all": "earlier/same", "base-verified-all": "earlier/other"})
    pipe.seed()
    assert (g.RUNS / "base-vote-all" / "results.jsonl").read_text().count("\n") == 2
    assert not (g.RUNS / "base-verified-all").exists()
    assert pipe.st["steps"]["seed"]["runs"] == {
        "base-vote-all": "2 graded, resumed from earlier/same",
        "base-verified-all": "made with another model revision: not resumed"}


def test_a_diverged_fine_tune_is_recorded_as_failed_and_never_served_as_the_tuned_model(g, tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "manifest.json").write_text('{"artifacts": {}, "model": {"sha256": "0"}}')
    pipe = g.Pipeline(stage, deadline_s=60)
    (g.W / "sft" / "final").mkdir(parents=True)
    (g.W / "sft" / "summary.json").write_text('{"steps": 243, "last_loss": NaN}')  # as trainer.sft wrote it
    pipe.record("sft", pid=2**22 + 12345, started=0)  # a pid that is not running: training has ended
    assert pipe.tick() is False
    assert "ended with loss nan: not served" in pipe.st["steps"]["sft"]["error"]
    assert not pipe.done("sft") and not (g.W / "tuned").exists()


def test_a_fine_tune_that_crashes_is_restarted_once_with_half_the_micro_batch_then_recorded_as_failed(
        g, tmp_path, monkeypatch):
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "manifest.json").write_text('{"artifacts": {}, "model": {"sha256": "0"}}')
    pipe = g.Pipeline(stage, deadline_s=60)
    pipe.record("dataset", done=True, chosen="relaxed")
    started = []
    monkeypatch.setattr(g, "spawn", lambda name, argv, env, cwd=None: started.append((argv, env)) or 2**22 + 12345)
    monkeypatch.setattr(g, "gpu_total_gib", lambda: 79.2)  # an 80 GB card
    pipe.sft_start()
    argv, env = started[-1]
    assert argv[argv.index("--micro-batch") + 1] == "2" and argv[argv.index("--global-batch") + 1] == "16"
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    g.LOGS.mkdir(parents=True, exist_ok=True)
    (g.LOGS / "sft.log").write_text("torch.OutOfMemoryError: CUDA out of memory.\n")
    assert pipe.tick() is False  # it died without a summary: once more, micro batch 1
    argv, _ = started[-1]
    assert len(started) == 2 and argv[argv.index("--micro-batch") + 1] == "1"
    assert "out of memory" in pipe.st["steps"]["sft"]["first_attempt_error"]
    assert "error" not in pipe.st["steps"]["sft"]
    assert pipe.tick() is False  # and again: now it is a failure, not a third try
    assert len(started) == 2 and "out of memory" in pipe.st["steps"]["sft"]["error"]


def test_without_training_half_runs_sft_starts_first_on_the_earlier_leases_m500(g, tmp_path, monkeypatch):
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "manifest.json").write_text('{"artifacts": {}, "model": {"sha256": "0"}}')
    monkeypatch.setattr(g, "TRAIN_RUNS", ())
    pipe = g.Pipeline(stage, deadline_s=60)
    order = [name for name, _, _ in pipe.steps()]
    assert order.index("sft-start") < order.index("base-team") < order.index("sft-wait")
    earlier = pipe.proj / "earlier"
    earlier.mkdir(parents=True)
    (earlier / "m500-relaxed.jsonl").write_text('{"problem_id": "p1", "seq": 1}\n{"problem_id": "p2", "seq": 1}\n')
    (earlier / "m500-strict.jsonl").write_text('{"problem_id": "p1", "seq": 1}\n')
    monkeypatch.setattr(g, "EARLIER_M500", ("earlier",))
    pipe.dataset()
    step = pipe.st["steps"]["dataset"]
    assert step["problems"]["relaxed"] == {"this_lease": 0, "with_earlier": 2, "samples": 2}
    assert step["chosen"] == "relaxed"  # 1 strict problem is under MIN_STRICT_PROBLEMS
    assert (g.W / "m500-relaxed-all.jsonl").read_text().count("\n") == 2

"""benchmarks/gpu: the call plan (pure logic) and the device driver's stash/assemble step, on a CPU."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu.plan import CALL_LIMIT, MAX_CARRY, MIB, PlanError, Stage, plan, transfer_calls

ROOT = Path(__file__).resolve().parents[1]


def stage(model_parts: int = 9, vllm_parts: int = 7, part: int = 56 * MIB) -> Stage:
    return Stage(root=".gpuw", parts={
        "vllm": [(f".gpuw/parts/vllm/part.{i:03d}", part) for i in range(vllm_parts)],
        "model": [(f".gpuw/parts/model/part.{i:03d}", part if i < model_parts - 1 else 20 * MIB)
                  for i in range(model_parts)],
        "wheels": [(".gpuw/parts/wheels/part.000", 15 * MIB)],
    }, always=[(".gpuw/proj", 2 * MIB), (".gpuw/manifest.json", 16384)])


def test_every_part_travels_once_within_the_limit_and_the_model_first():
    s = stage()
    calls = plan(s, tree_bytes=2_600_000, pipeline=3)
    carried = [p for c in calls for p in c.carry if "/parts/" in p]
    assert sorted(carried) == sorted(p for parts in s.parts.values() for p, _ in parts)
    assert all(c.carried_bytes <= CALL_LIMIT and len(c.carry) <= MAX_CARRY for c in calls)
    assert all(".gpuw/proj" in c.carry and ".gpuw/manifest.json" in c.carry for c in calls)
    # the model (and the wheels with gguf) arrive before vLLM, so conversion overlaps vLLM's transfer
    first_vllm = next(i for i, c in enumerate(calls) if any("/vllm/" in p for p in c.carry))
    last_model = max(i for i, c in enumerate(calls) if any("/model/" in p or "/wheels/" in p for p in c.carry))
    assert last_model < first_vllm
    # the wheels share the call of the model's short last part: 9 + 7 transfer calls, the last starts the pipeline
    transfers = [c for c in calls if any("/parts/" in p for p in c.carry)]
    assert len(transfers) == 16
    assert transfers[-1].command.endswith("go --deadline-s 540") and "stash" in transfers[0].command
    assert len(calls) == 16 + 2


def test_a_part_that_cannot_fit_beside_the_tree_is_refused_with_its_size():
    with pytest.raises(PlanError, match="does not fit"):
        transfer_calls(stage(part=62 * MIB), tree_bytes=2_600_000)


def test_an_unknown_artifact_is_refused():
    s = stage()
    s.parts["weights"] = [(".gpuw/parts/weights/part.000", MIB)]
    with pytest.raises(PlanError, match="unknown artifacts"):
        transfer_calls(s, tree_bytes=0)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_device_driver_assembles_an_artifact_only_once_all_its_parts_came(tmp_path):
    # A CPU twin of the transfer calls: parts arrive over two calls; the GGUF is assembled and checked.
    st = tmp_path / "stage"
    (st / "parts" / "model").mkdir(parents=True)
    blob = os.urandom(3000)
    for i in range(3):
        (st / "parts" / "model" / f"part.{i:03d}").write_bytes(blob[i * 1000:(i + 1) * 1000])
    manifest = {"artifacts": {"model": {"sha256": _sha(blob), "parts": [
        {"path": f"parts/model/part.{i:03d}", "bytes": 1000} for i in range(3)]}},
        "model": {"gguf": "m.gguf", "sha256": _sha(blob), "name": "m"}, "always": []}
    (st / "manifest.json").write_text(json.dumps(manifest))
    held = (st / "parts" / "model" / "part.002").read_bytes()
    (st / "parts" / "model" / "part.002").unlink()
    driver = [sys.executable, str(ROOT / "benchmarks/gpu/device/gpurun.py"), "--stage", str(st), "stash"]
    env = dict(os.environ, GPURUN_DIR=str(tmp_path / "w"))
    first = subprocess.run(driver, env=env, capture_output=True, text=True, check=True, timeout=60)
    assert "model: 2 of 3 parts" in first.stdout and not (tmp_path / "w" / "m.gguf").exists()
    (st / "parts" / "model" / "part.002").write_bytes(held)
    second = subprocess.run(driver, env=env, capture_output=True, text=True, check=True, timeout=60)
    assert "sha256 verified" in second.stdout
    assert (tmp_path / "w" / "m.gguf").read_bytes() == blob


def test_a_corrupt_part_is_caught_by_the_sha256(tmp_path):
    st = tmp_path / "stage"
    (st / "parts" / "model").mkdir(parents=True)
    (st / "parts" / "model" / "part.000").write_bytes(b"x" * 10)
    manifest = {"artifacts": {"model": {"sha256": _sha(b"y" * 10), "parts": [{"path": "parts/model/part.000",
                                                                            "bytes": 10}]}},
                "model": {"gguf": "m.gguf", "sha256": "0", "name": "m"}, "always": []}
    (st / "manifest.json").write_text(json.dumps(manifest))
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu/device/gpurun.py"), "--stage", str(st), "stash"],
                       env=dict(os.environ, GPURUN_DIR=str(tmp_path / "w")), capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "does not match the manifest" in r.stderr


def test_of_earlier_leases_only_what_the_pipeline_reads_travels_with_the_project():
    from benchmarks.gpu.prepare import ROOT, _gpurun, project_files

    files = set(project_files(ROOT))
    runs = [f for f in files if f.startswith("docs/gpu-runs/")]
    for folder in _gpurun().EARLIER_M500:
        assert f"{folder}/m500-relaxed.jsonl" in files
    for folder in _gpurun().EARLIER_RUNS.values():
        assert f"{folder}/results.jsonl" in files and f"{folder}/run.json" in files
    assert all(f.endswith((".json", ".jsonl")) for f in runs)  # no logs, tarballs, pictures of old runs
    assert not any(f.startswith(("docs/results/", "deploy/")) for f in files)


def test_only_wheels_refreshes_the_runtime_wheels_and_keeps_the_model_and_vllm_parts(tmp_path):
    import tarfile

    from benchmarks.gpu.prepare import main as prepare

    st, wheels, gguf = tmp_path / "stage", tmp_path / "wheels", tmp_path / "m.gguf"
    wheels.mkdir()
    (wheels / "uvloop-0.23.0-cp312-cp312-manylinux2014_x86_64.whl").write_bytes(b"a wheel")
    gguf.write_bytes(b"GGUF")
    st.mkdir()
    kept = {"model": {"sha256": "m" * 64, "bytes": 4, "parts": [{"path": "parts/model/part.000", "bytes": 4}]},
            "vllm": {"sha256": "v" * 64, "bytes": 9, "parts": [{"path": "parts/vllm/part.000", "bytes": 9}]},
            "wheels": {"sha256": "w" * 64, "bytes": 1, "parts": [{"path": "parts/wheels/part.000", "bytes": 1}]}}
    (st / "manifest.json").write_text(json.dumps({"artifacts": kept}))
    assert prepare(["--stage", str(st), "--only-wheels", "--wheels", str(wheels), "--model", str(gguf)]) == 0
    manifest = json.loads((st / "manifest.json").read_text())
    assert manifest["artifacts"]["model"] == kept["model"] and manifest["artifacts"]["vllm"] == kept["vllm"]
    new = manifest["artifacts"]["wheels"]
    assert new["sha256"] != kept["wheels"]["sha256"] and len(new["parts"]) == 1
    with tarfile.open(st / new["parts"][0]["path"]) as tar:
        assert tar.getnames() == ["uvloop-0.23.0-cp312-cp312-manylinux2014_x86_64.whl"]
    assert (st / "proj" / "benchmarks" / "gpu" / "device" / "gpurun.py").exists()

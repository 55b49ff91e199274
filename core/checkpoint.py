"""Checkpoints that are never loaded half-written, corrupted or unsafe.

Layout under a run's `checkpoints/` folder:
    step_00000010/         one complete checkpoint: whatever the trainer wrote (an `hf/` model folder, DeepSpeed
                           state, `trainer_state.pt`) plus MANIFEST.json (every file's size and SHA-256), written last
    latest                 text file naming the newest complete checkpoint, replaced atomically after it

A checkpoint is written into `.tmp-step_N/`, its manifest added, then renamed; only then is `latest` updated.
Multi-rank trainers: every rank writes into `begin(step)`'s folder, then rank 0 alone calls `commit(step)`.

Loading (`scan`, `latest`): a checkpoint is usable when its manifest lists every file at its recorded size and
SHA-256, and every pickled file in it (`*.pt`) deserialises under `torch.load(weights_only=True)` (tensors and plain
data only, so a pickle payload never runs). Checkpoints that fail are skipped with a warning naming them and why;
the newest usable one is used. Rotation (`keep_last`) deletes only checkpoints older than the newest usable ones
it keeps, so the newest checkpoint that passed the check always survives.

DeepSpeed's own loader is run inside `safe_deepspeed_load()`: torch.load is forced to weights_only=True there,
with the three DeepSpeed classes its optimiser files need allow-listed (LossScaler, ZeroStageEnum,
fragment_address: plain attribute holders).

torch is imported inside the functions that load or capture state: the CLIs and the preflight import this module
for its error types and `format_bytes` before anything heavy starts, and torch takes seconds to import.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pickle
import random
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from core.logging import get_logger

log = get_logger(__name__)

MANIFEST = "MANIFEST.json"
LATEST = "latest"
FORMAT = 2  # manifest format: 1 = sizes only (older runs), 2 = sizes and SHA-256
_STEP_DIR = re.compile(r"^step_(\d{8})$")
PICKLED_SUFFIXES = (".pt", ".pth")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or used; the message names the folder or file."""


class ResumeError(CheckpointError):
    """The run cannot resume as asked (no usable checkpoint, data changed): an input error, exit code 2."""


class DiskFullError(CheckpointError):
    """Saving ran out of space: the message names the folder, the space a checkpoint needs and what is free."""


class CheckpointManager:
    def __init__(self, root: str | Path, keep_last: int = 2):
        self.root = Path(root)
        self.keep_last = keep_last
        self._verified: dict[str, tuple] = {}  # folder name -> file signature it passed the check with

    @staticmethod
    def step_name(step: int) -> str:
        return f"step_{step:08d}"

    def begin(self, step: int) -> Path:
        """The temporary folder to write checkpoint `step` into (created empty)."""
        tmp = self.root / f".tmp-{self.step_name(step)}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, step: int, extra: dict[str, Any] | None = None) -> Path:
        """Seal checkpoint `step`: manifest with checksums, rename into place, then point `latest` at it; prune."""
        tmp = self.root / f".tmp-{self.step_name(step)}"
        if not tmp.is_dir():
            raise CheckpointError(f"commit({step}) without begin({step}): {tmp} does not exist")
        files = {str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": file_sha256(p)}
                 for p in sorted(tmp.rglob("*")) if p.is_file() and p.name != MANIFEST}
        manifest = {"format": FORMAT, "step": step, "files": files, **(extra or {})}
        _write_synced(tmp / MANIFEST, json.dumps(manifest, indent=1))
        final = self.root / self.step_name(step)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        _fsync_dir(self.root)
        self._verified[final.name] = _signature(final)
        _atomic_write(self.root / LATEST, final.name)
        self._prune()
        log.info("checkpoint %s written", final)
        return final

    # ---- finding checkpoints ----
    def folders(self) -> list[Path]:
        """Every sealed-looking step folder, newest first (whether or not it passes the check)."""
        if not self.root.is_dir():
            return []
        return sorted((p for p in self.root.iterdir() if _STEP_DIR.match(p.name) and p.is_dir()),
                      key=lambda p: p.name, reverse=True)

    def problem(self, path: Path) -> str | None:
        """Why `path` cannot be resumed from (None: usable). Checked once per process per unchanged folder."""
        sig = _signature(path)
        if self._verified.get(path.name) == sig and sig:
            return None
        reason = verify(path)
        if reason is None:
            self._verified[path.name] = sig
        return reason

    def scan(self) -> tuple[list[Path], list[tuple[Path, str]]]:
        """(usable checkpoints newest first, [(rejected checkpoint, why)]). Each rejection is logged."""
        usable, rejected = [], []
        for path in self.folders():
            reason = self.problem(path)
            if reason is None:
                usable.append(path)
            else:
                log.warning("checkpoint %s is skipped: %s", path, reason)
                rejected.append((path, reason))
        marker = self.root / LATEST
        if marker.is_file() and usable and marker.read_text().strip() != usable[0].name:
            log.warning("checkpoint marker %s names %s; the newest usable checkpoint is %s", marker,
                        marker.read_text().strip(), usable[0].name)
        return usable, rejected

    def complete_checkpoints(self) -> list[Path]:
        """Usable checkpoints, oldest first."""
        return list(reversed(self.scan()[0]))

    def latest(self) -> Path | None:
        """The newest usable checkpoint, or None. Never returns an incomplete, corrupted or unsafe one."""
        usable, _ = self.scan()
        return usable[0] if usable else None

    def _prune(self) -> None:
        """Keep the newest `keep_last` usable checkpoints; delete older ones (usable or not). Folders newer than the
        newest usable one are left for inspection (they are skipped on load)."""
        kept = 0
        oldest_kept = None
        for path in self.folders():
            if kept < self.keep_last:
                if self.problem(path) is None:
                    kept += 1
                    oldest_kept = path.name
                continue
            if oldest_kept is not None and path.name < oldest_kept:
                shutil.rmtree(path, ignore_errors=True)

    @staticmethod
    def step_of(path: Path) -> int:
        m = _STEP_DIR.match(path.name)
        if not m:
            raise CheckpointError(f"{path} is not a step_NNNNNNNN checkpoint folder")
        return int(m.group(1))


def set_aside(root: Path) -> Path | None:
    """A fresh start over an earlier run (resume=never): rename its checkpoints folder to
    `<name>.replaced-<UTC time>` (kept, never deleted) so none of it is resumed from or rotated away."""
    if not CheckpointManager(root).folders():
        return None
    base = f"{root.name}.replaced-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    target, n = root.with_name(base), 1
    while target.exists():
        target, n = root.with_name(f"{base}-{n}"), n + 1
    root.rename(target)
    log.warning("resume=never: the earlier run's checkpoints in %s were moved to %s", root, target)
    return target


def read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) else None


def is_complete(path: Path) -> bool:
    """Quick check: the manifest exists and every listed file is there at its recorded size (no hashing)."""
    manifest = read_manifest(path)
    if manifest is None:
        return False
    return all((path / rel).is_file() and (path / rel).stat().st_size == _size(entry)
               for rel, entry in manifest["files"].items())


def verify(path: Path) -> str | None:
    """Full check of one checkpoint folder: None when usable, else the reason (first problem found)."""
    if not (path / MANIFEST).is_file():
        return f"no {MANIFEST} (never sealed: the run stopped while writing it)"
    manifest = read_manifest(path)
    if manifest is None:
        return f"{MANIFEST} is unreadable"
    for rel, entry in sorted(manifest["files"].items()):
        file = path / rel
        if not file.is_file():
            return f"{rel} is missing"
        if file.stat().st_size != _size(entry):
            return f"{rel} is {file.stat().st_size} bytes, the manifest says {_size(entry)} (truncated or replaced)"
        if isinstance(entry, dict) and file_sha256(file) != entry.get("sha256"):
            return f"{rel} does not match its SHA-256 in the manifest (corrupted or modified)"
    for rel in sorted(manifest["files"]):
        if rel.endswith(PICKLED_SUFFIXES):
            try:
                load_state(path / rel, mmap=True)
            except CheckpointError as err:
                return str(err)
    return None


def _size(entry: Any) -> int:
    return int(entry["size"]) if isinstance(entry, dict) else int(entry)  # format 1: the size alone


def _signature(path: Path) -> tuple:
    try:
        return tuple(sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
                            for p in path.rglob("*") if p.is_file()))
    except OSError:
        return ()


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be opened for fsync
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    _write_synced(tmp, text)
    os.replace(tmp, path)


# ---- resuming ----

def resume_point(mgr: CheckpointManager, mode: str, accept: Callable[[Path], Any], *,
                 set_aside_earlier: bool = True) -> tuple[Path, Any] | None:
    """The checkpoint to resume from, by checkpoints.resume `mode`, chosen before anything heavy starts:
    auto: the newest usable one (None when there is none); must: one is required; never: None, and an earlier
    run's checkpoints are renamed aside (by the caller that passes `set_aside_earlier`, one process of a run).

    Usable = passes CheckpointManager.scan (checksums, safe deserialisation) and `accept(path)`, which returns what
    the trainer needs from it and raises ResumeError when it was trained on other data (a CheckpointError skips it
    like a damaged one). ResumeError (exit 2) when the run cannot resume as asked."""
    if mode == "never":
        if set_aside_earlier:
            set_aside(mgr.root)
        return None
    usable, rejected = mgr.scan()
    for path in usable:
        try:
            return path, accept(path)
        except ResumeError:
            raise
        except CheckpointError as err:
            log.warning("checkpoint %s is skipped: %s", path, err)
            rejected.append((path, str(err)))
    if rejected:
        detail = "; ".join(f"{p.name}: {why}" for p, why in rejected[:3])
        raise ResumeError(f"checkpoints.resume={mode}: {len(rejected)} checkpoint(s) in {mgr.root}, none usable "
                          f"({detail}); set checkpoints.resume=never to start over (they are kept, renamed)")
    if mode == "must":
        raise ResumeError(f"checkpoints.resume=must but there is no checkpoint in {mgr.root}")
    return None


# ---- what a resume takes from the checkpoint, not from the config ----

RESTORED_OPTIM_KEYS = ("lr", "weight_decay", "betas", "eps", "lr_scheduler", "warmup_ratio", "warmup_steps")


def optimiser_settings(**sections: Any) -> dict[str, dict[str, Any]]:
    """{section: {key: value}} of the optimiser settings a resume restores from the checkpoint (RESTORED_OPTIM_KEYS)
    for each config section given (an OptimConfig, or None to leave it out), as JSON-ready values: kept in each
    checkpoint's manifest and compared on resume (check_same_optimiser)."""
    def plain(v):
        return list(v) if isinstance(v, tuple) else v

    return {name: {key: plain(getattr(opt, key)) for key in RESTORED_OPTIM_KEYS}
            for name, opt in sections.items() if opt is not None}


def check_same_optimiser(checkpoint: Path, saved: dict[str, dict[str, Any]] | None,
                         now: dict[str, dict[str, Any]]) -> None:
    """A resume continues the checkpoint's optimiser and LR schedule (DeepSpeed restores each parameter group's lr,
    weight decay, betas and eps and the scheduler's state), so a changed `optim.lr` (or another key of
    RESTORED_OPTIM_KEYS) would be silently ignored: ResumeError naming each change instead. `saved`: the
    checkpoint manifest's "optimiser" (None for a checkpoint written before it was recorded: nothing to compare);
    `now`: optimiser_settings of the current config."""
    if not saved:
        return
    changes = [f"{section}.{key} {before.get(key)!r} -> {current.get(key)!r}"
               for section, current in now.items() if isinstance(before := saved.get(section), dict)
               for key in RESTORED_OPTIM_KEYS if key in before and before[key] != current.get(key)]
    if changes:
        raise ResumeError(f"{checkpoint} was trained with other optimiser settings ({', '.join(changes)}); a resume "
                          "continues the checkpoint's optimiser and LR schedule, so the new values would be "
                          "ignored. Resume with the checkpoint's values, or set checkpoints.resume=never to start "
                          "over (the earlier checkpoints are kept, renamed)")


def check_same_lora(checkpoint: Path, saved: dict[str, Any] | None, now: dict[str, Any]) -> None:
    """A LoRA checkpoint holds only the adapters of its own `lora` settings (core.model_factory), so a resume with
    other ones cannot continue it: ResumeError naming the section. `saved`: the manifest's "lora" (None: a
    checkpoint written before LoRA existed, i.e. lora off); `now`: `cfg.lora.model_dump(mode="json")`."""
    if saved is None:
        saved = {**now, "rank": 0} if now.get("rank", 0) else now
    if saved != now:
        raise ResumeError(f"{checkpoint} was written with lora {saved}, this run has lora {now}; resume with the "
                          "same lora settings, or set checkpoints.resume=never to start over")


# ---- safe loading ----

def load_state(path: Path, *, mmap: bool = False) -> Any:
    """A state file of ours (or a DeepSpeed one) with torch.load(weights_only=True): tensors and plain data only.
    Any failure (a pickle payload, a foreign type, a garbled or zeroed file) is a CheckpointError naming it."""
    import torch  # lazy: see the module docstring

    try:
        with torch.serialization.safe_globals(_deepspeed_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, KeyError, ValueError, TypeError,
            AttributeError, ImportError, IndexError) as err:
        lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(err)).splitlines() if line.strip()]
        # torch's weights-only refusal names the forbidden global (e.g. posix.system) on a later line
        detail = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else "")
        raise CheckpointError(f"{path.name} cannot be loaded safely ({type(err).__name__}: {detail[:200]})") from None


def _deepspeed_globals() -> list:
    """The DeepSpeed classes its ZeRO optimiser files pickle (checked on ZeRO 0-3, fp32 and bf16)."""
    try:  # lazy: DeepSpeed takes seconds to import and is optional here (a torch-only checkpoint needs none)
        from deepspeed.runtime.fp16.loss_scaler import LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address
    except ImportError:
        return []
    return [LossScaler, ZeroStageEnum, fragment_address]


@contextlib.contextmanager
def safe_deepspeed_load() -> Iterator[None]:
    """Run DeepSpeed's `load_checkpoint` with every torch.load forced to weights_only=True (DeepSpeed passes
    weights_only=False itself; $TORCH_FORCE_WEIGHTS_ONLY_LOAD overrides that) and its classes allow-listed."""
    import torch  # lazy: see the module docstring

    old = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        with torch.serialization.safe_globals(_deepspeed_globals()):
            yield
    finally:
        if old is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = old


# ---- saving: out-of-space errors that say so ----

LOW_SPACE_BYTES = 64 * 2**20


def is_disk_full(err: BaseException, folder: Path) -> bool:
    """ENOSPC/EDQUOT anywhere in the error's chain (a Ray actor's error included), or torch's serializer failing
    on a short write (`[enforce fail at inline_container.cc...] unexpected pos`, which never says why) while
    `folder`'s filesystem is nearly full."""
    seen: set[int] = set()
    torch_write_failed = False
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(err)
        if "No space left on device" in text or "Disk quota exceeded" in text:
            return True
        torch_write_failed |= "inline_container" in text
        err = getattr(err, "cause", None) or err.__cause__ or err.__context__
    return torch_write_failed and _free_bytes(folder) < LOW_SPACE_BYTES


@contextlib.contextmanager
def out_of_space_guard(unsealed: Path, root: Path, needed_bytes: Callable[[], int | None]) -> Iterator[None]:
    """Around writing a checkpoint into `unsealed`: when the disk fills, drop the unsealed part (it would only take
    more space) and raise DiskFullError naming `root`, the space a checkpoint needs and what is free."""
    try:
        yield
    except Exception as err:
        if not is_disk_full(err, root):
            raise
        shutil.rmtree(unsealed, ignore_errors=True)
        raise disk_full_error(root, needed_bytes()) from err


def disk_full_error(folder: Path, needed_bytes: int | None) -> DiskFullError:
    free = _free_bytes(folder)
    need = f"a checkpoint needs about {format_bytes(needed_bytes)}, " if needed_bytes else ""
    return DiskFullError(f"no space left to save a checkpoint in {folder}: {need}{format_bytes(free)} free there; "
                         "free some space and rerun the same command to resume from the last checkpoint")


def _free_bytes(folder: Path) -> int:
    for p in (folder, *folder.parents):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(p).free
    return 0


def format_bytes(n: int | float | None) -> str:
    n = float(n or 0)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


# ---- RNG state as plain data (loadable with weights_only=True) ----

def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) generator states, for exact resume: lists, numbers and tensors."""
    import torch  # lazy: see the module docstring

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss],
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    import torch  # lazy: see the module docstring

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

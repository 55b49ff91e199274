"""Run-folder integrity (issue 12): each fault injected on the tiny configs, through the real CLI.

Checked: no NaN, corrupted or unsafe checkpoint is ever loaded or kept as newest, and the last good one survives;
a second writer is refused; a pickle payload in a state file never runs; every environment fault (missing model,
empty or non-UTF-8 data, read-only or full output folder, data changed before a resume, all checkpoints damaged)
exits 2 with one line naming the input, before Ray starts; a full disk during a save names the folder and the space
needed. SFT/DPO and the RLVR preflight run in this process (seconds); the RLVR run with its own local Ray (loopback
ports, no orphans after the driver is SIGKILLed, corruption, NaN, payload, data change) is marked slow.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from core.checkpoint import CheckpointManager, file_sha256, verify
from core.metrics import read_metrics

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


# ---------------------------------------------------------------- helpers

def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                          {"role": "assistant", "content": f"The answer is {2 * i}."}]} for i in range(16)]
    return _jsonl(tmp_path_factory.mktemp("data") / "sft.jsonl", rows)


def _pair(i: int, same: bool) -> dict:
    prompt = {"role": "user", "content": f"What is {i} + {i}?"}
    good = {"role": "assistant", "content": f"The answer is {2 * i}."}
    bad = good if same else {"role": "assistant", "content": "7 7 7 7 7"}
    return {"chosen": [prompt, good], "rejected": [prompt, bad]}


LAST_STDERR = {"text": ""}


def cli(capsys, *argv: str) -> tuple[int, list[str]]:
    """`rlvr ARGV` in this process: (exit code, the stderr lines that start with "error"). The whole stderr (with
    the log's warnings) is kept in LAST_STDERR."""
    from rlvr.cli import main

    capsys.readouterr()
    rc = main(list(argv))
    err = capsys.readouterr().err
    LAST_STDERR["text"] = err
    return rc, [line for line in err.splitlines() if line.startswith(("error", "rlvr "))]


def sft(tiny, data, out, *extra: str) -> list[str]:
    return ["sft", "--config", str(CONFIGS / "sft" / "tiny_cpu.yaml"), f"model={tiny}", f"output_dir={out}",
            f"data.path={data}", "logging.tensorboard=false", *extra]


def dpo(tiny, data, out, *extra: str) -> list[str]:
    return ["dpo", "--config", str(CONFIGS / "dpo" / "tiny_cpu.yaml"), f"model={tiny}", f"output_dir={out}",
            f"data.path={data}", "logging.tensorboard=false", f"ref_cache_dir={out}-ref", *extra]


def rlvr_args(tiny, out, *extra: str) -> list[str]:
    return ["train", "--config", str(CONFIGS / "rlvr" / "tiny_grpo.yaml"), f"model={tiny}", f"output_dir={out}",
            "train.progress=false", "logging.tensorboard=false", "data.eval=[]", *extra]


def one_line_exit_2(rc: int, errors: list[str], *names: str) -> str:
    assert rc == 2 and len(errors) == 1, (rc, errors)
    for name in names:
        assert name in errors[0], (name, errors[0])
    return errors[0]


def ray_running() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def reseal(path: Path) -> None:
    """Rewrite a checkpoint's manifest to match tampered files (whoever sends a checkpoint controls it too)."""
    manifest = json.loads((path / "MANIFEST.json").read_text())
    for rel in manifest["files"]:
        manifest["files"][rel] = {"size": (path / rel).stat().st_size, "sha256": file_sha256(path / rel)}
    (path / "MANIFEST.json").write_text(json.dumps(manifest))


def flip_4kb(file: Path) -> None:
    data = bytearray(file.read_bytes())
    start = len(data) // 3
    data[start:start + 4096] = os.urandom(4096)
    file.write_bytes(bytes(data))


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant_payload(file: Path, marker: Path) -> None:
    import torch

    torch.save({"step": 1, "module": Payload(marker)}, file)


@contextmanager
def tmpfs(path: Path, size: str, *, read_only: bool = False):
    """A small filesystem of our own (root only): a full disk or a read-only folder without touching others'."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def all_finite_weights(ckpt: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    return all(bool(torch.isfinite(t).all()) for t in load_file(ckpt / "hf" / "model.safetensors").values())


# ---------------------------------------------------------------- SFT / DPO (in-process, seconds each)

def test_sft_damaged_checkpoints_are_skipped_and_the_newest_good_one_is_used(tiny_model_dir, sft_data, tmp_path,
                                                                              capsys):
    out = tmp_path / "run"
    assert cli(capsys, *sft(tiny_model_dir, sft_data, out, "checkpoints.save_every=1", "stop_after_steps=3",
                            "checkpoints.keep_last=3"))[0] == 0
    ckpts = out / "checkpoints"
    flip_4kb(ckpts / "step_00000003" / "deepspeed" / "state" / "mp_rank_00_model_states.pt")  # same size
    state = ckpts / "step_00000002" / "trainer_state_rank0.pt"
    state.write_bytes(bytes(state.stat().st_size))  # zeroed, and the manifest made to match
    reseal(ckpts / "step_00000002")
    rc, errors = cli(capsys, *sft(tiny_model_dir, sft_data, out, "checkpoints.save_every=1", "checkpoints.keep_last=3"))
    assert rc == 0, errors
    assert "step_00000003 is skipped" in LAST_STDERR["text"] and "SHA-256" in LAST_STDERR["text"]
    assert "step_00000002 is skipped" in LAST_STDERR["text"] and "cannot be loaded safely" in LAST_STDERR["text"]
    assert [m["resumed_from_step"] for m in read_metrics(out) if "resumed_from_step" in m][-1] == 1
    assert all(verify(p) is None for p in CheckpointManager(ckpts).folders())  # 2-4 rewritten whole


def test_pickle_payloads_in_state_files_never_run(tiny_model_dir, sft_data, tmp_path, capsys):
    out, marker = tmp_path / "run", tmp_path / "payload-ran"
    assert cli(capsys, *sft(tiny_model_dir, sft_data, out, "checkpoints.save_every=1", "stop_after_steps=2"))[0] == 0
    ckpts = out / "checkpoints"
    plant_payload(ckpts / "step_00000002" / "trainer_state_rank0.pt", marker)
    plant_payload(ckpts / "step_00000001" / "deepspeed" / "state" / "mp_rank_00_model_states.pt", marker)
    reseal(ckpts / "step_00000002")
    reseal(ckpts / "step_00000001")
    rc, errors = cli(capsys, *sft(tiny_model_dir, sft_data, out))
    line = one_line_exit_2(rc, errors, "none usable", "step_00000002", "step_00000001", "resume=never")
    assert "cannot be loaded safely" in line
    assert not marker.exists()


def test_nonfinite_update_stops_before_saving_and_the_last_good_checkpoint_survives(tiny_model_dir, sft_data,
                                                                                     tmp_path, capsys):
    """lr 1e30: the first update leaves huge but finite weights (saved), the next step's loss overflows."""
    out = tmp_path / "run"
    rc, errors = cli(capsys, *sft(tiny_model_dir, sft_data, out, "checkpoints.save_every=1", "optim.lr=1e30"))
    assert rc == 1 and len(errors) == 1 and re.search(r"sft step \d: \S+ is (nan|inf)", errors[0]), errors
    step = int(re.search(r"step (\d)", errors[0]).group(1))
    mgr = CheckpointManager(out / "checkpoints")
    newest = mgr.latest()
    assert CheckpointManager.step_of(newest) == step - 1 and newest.name in errors[0]
    assert all(all_finite_weights(p) for p in mgr.folders())
    assert not (out / "final").exists()


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(tiny_model_dir, sft_data, tmp_path,
                                                                          capsys):
    out = tmp_path / "run"
    hold = ("import sys, time; from core.runlock import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(300)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        rc, errors = cli(capsys, *sft(tiny_model_dir, sft_data, out))
        one_line_exit_2(rc, errors, str(out), f"pid {holder.pid}", "in use by another run")
        assert not (out / "metrics.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    assert cli(capsys, *sft(tiny_model_dir, sft_data, out))[0] == 0  # the holder died: its lock is stale


def test_torn_metrics_line_is_dropped_on_resume(tiny_model_dir, sft_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(capsys, *sft(tiny_model_dir, sft_data, out, "checkpoints.save_every=1", "stop_after_steps=2"))[0] == 0
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 1.2')  # the run was killed mid-line
    assert cli(capsys, *sft(tiny_model_dir, sft_data, out, "checkpoints.save_every=1"))[0] == 0
    assert "torn" in LAST_STDERR["text"]
    steps = [m["step"] for m in read_metrics(out) if "loss" in m]
    assert steps == [1, 2, 3, 4]


def test_resume_modes_with_damaged_checkpoints(tiny_model_dir, sft_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(capsys, *sft(tiny_model_dir, sft_data, out, "checkpoints.save_every=1", "stop_after_steps=2"))[0] == 0
    for ckpt in CheckpointManager(out / "checkpoints").folders():
        flip_4kb(ckpt / "hf" / "model.safetensors")
    rc, errors = cli(capsys, *sft(tiny_model_dir, sft_data, out))
    one_line_exit_2(rc, errors, "resume=auto", "2 checkpoint(s)", "none usable")
    old_metrics = (out / "metrics.jsonl").read_text()
    assert cli(capsys, *sft(tiny_model_dir, sft_data, out, "checkpoints.resume=never"))[0] == 0
    kept = list(out.glob("checkpoints.replaced-*"))
    assert len(kept) == 1 and len(CheckpointManager(kept[0]).folders()) == 2  # nothing deleted
    assert [p.read_text() for p in out.glob("metrics.replaced-*.jsonl")] == [old_metrics]
    assert [m["step"] for m in read_metrics(out) if "loss" in m] == [1, 2, 3, 4]
    rc, errors = cli(capsys, *sft(tiny_model_dir, sft_data, tmp_path / "empty", "checkpoints.resume=must"))
    one_line_exit_2(rc, errors, "resume=must", "no checkpoint")


def test_data_changed_before_resume_is_refused_before_training(tiny_model_dir, sft_data, tmp_path, capsys):
    out, data = tmp_path / "run", tmp_path / "data.jsonl"
    data.write_text(sft_data.read_text())
    assert cli(capsys, *sft(tiny_model_dir, data, out, "checkpoints.save_every=1", "stop_after_steps=1"))[0] == 0
    data.write_text("".join(data.read_text().splitlines(keepends=True)[1:]))  # one row fewer
    rc, errors = cli(capsys, *sft(tiny_model_dir, data, out))
    one_line_exit_2(rc, errors, "step_00000001", "trained on other data")


def test_optimiser_settings_changed_before_resume_are_refused_not_ignored(tiny_model_dir, sft_data, tmp_path,
                                                                           capsys):
    """A resume continues the checkpoint's optimiser and LR schedule, so a new optim.lr would be silently ignored:
    exit 2 naming the key and both values; the same settings resume."""
    out = tmp_path / "run"
    assert cli(capsys, *sft(tiny_model_dir, sft_data, out, "checkpoints.save_every=1", "stop_after_steps=1"))[0] == 0
    manifest = json.loads((out / "checkpoints" / "step_00000001" / "MANIFEST.json").read_text())
    lr = manifest["optimiser"]["optim"]["lr"]
    rc, errors = cli(capsys, *sft(tiny_model_dir, sft_data, out, f"optim.lr={lr * 10}"))
    one_line_exit_2(rc, errors, "step_00000001", f"optim.lr {lr!r} -> {lr * 10!r}", "checkpoints.resume=never")
    assert cli(capsys, *sft(tiny_model_dir, sft_data, out, "stop_after_steps=2"))[0] == 0


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("command", ["sft", "dpo", "train"])
@pytest.mark.parametrize("fault", ["missing_model", "empty_data", "non_utf8", "missing_data"])
def test_environment_faults_exit_2_with_one_line_before_anything_starts(command, fault, tiny_model_dir, tmp_path,
                                                                        capsys):
    row = {"sft": b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n',
           "dpo": json.dumps(_pair(1, False)).encode() + b"\n",
           "train": b'{"messages": [{"role": "user", "content": "hi"}], "ground_truth": "1", "dataset": "gsm8k"}\n'}
    good = _write(tmp_path / "good.jsonl", row[command] * 8)
    data, model, expect = good, str(tiny_model_dir), []
    if fault == "missing_model":
        model, expect = str(tmp_path / "no-such-model"), ["model", "no-such-model", "not found"]
    elif fault == "empty_data":
        data = _write(tmp_path / "empty.jsonl", b"")
        expect = [str(data), "empty"]
    elif fault == "non_utf8":
        data = _write(tmp_path / "latin1.jsonl", row[command] + row[command].replace(b'"content": "', b'"content": "\xe9', 1))
        expect = [f"{data}:2", "not UTF-8", "0xe9"]
    else:
        data = tmp_path / "nowhere.jsonl"
        expect = [str(data), "not found"]
    out = tmp_path / "out"
    if command == "train":
        argv = rlvr_args(model, out, f"data.train=[{data}]")
    else:
        argv = (sft if command == "sft" else dpo)(model, data, out)
    before = ray_running()
    rc, errors = cli(capsys, *argv)
    one_line_exit_2(rc, errors, *expect)
    assert ray_running() == before  # nothing started
    assert not (out / "metrics.jsonl").exists()


@pytest.mark.parametrize("command", ["sft", "train"])
def test_read_only_output_folder_exits_2(command, tiny_model_dir, sft_data, tmp_path, capsys):
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        out = ro / "run"
        argv = rlvr_args(tiny_model_dir, out) if command == "train" else sft(tiny_model_dir, sft_data, out)
        rc, errors = cli(capsys, *argv)
    one_line_exit_2(rc, errors, "output_dir", str(out), "Read-only file system")


def test_too_little_space_for_a_checkpoint_exits_2_before_training(tiny_model_dir, sft_data, tmp_path, capsys):
    with tmpfs(tmp_path / "small", "1m") as small:
        rc, errors = cli(capsys, *sft(tiny_model_dir, sft_data, small / "run", "checkpoints.save_every=1"))
    one_line_exit_2(rc, errors, "output_dir", "free", "one checkpoint of this model needs about 5.3 MB")


def test_disk_full_during_a_save_names_the_folder_and_keeps_the_last_good_checkpoint(tiny_model_dir, sft_data,
                                                                                      tmp_path, capsys):
    """8 MB: room for the preflight's one-checkpoint estimate (5.3 MB) and the first checkpoint, not the second."""
    with tmpfs(tmp_path / "disk", "8m") as disk:
        out = disk / "run"
        rc, errors = cli(capsys, *sft(tiny_model_dir, sft_data, out, "checkpoints.save_every=1", "checkpoints.keep_last=2"))
        line = one_line_exit_2(rc, errors, "no space left", str(out / "checkpoints"), "needs about 5.3 MB", "free")
        mgr = CheckpointManager(out / "checkpoints")
        assert [p.name for p in mgr.folders()] == ["step_00000001"] and mgr.latest() is not None
        assert not list((out / "checkpoints").glob(".tmp-*"))  # the unsealed part was removed
    assert "resume" in line


def test_dpo_pairs_with_chosen_equal_to_rejected_are_counted_and_dropped(tiny_model_dir, tmp_path, capsys):
    same = _jsonl(tmp_path / "same.jsonl", [_pair(i, True) for i in range(8)])
    rc, errors = cli(capsys, *dpo(tiny_model_dir, same, tmp_path / "a"))
    one_line_exit_2(rc, errors, "no usable rows", "8 chosen equals rejected")
    mixed = _jsonl(tmp_path / "mixed.jsonl", [_pair(i, i % 3 == 0) for i in range(24)])
    assert cli(capsys, *dpo(tiny_model_dir, mixed, tmp_path / "b"))[0] == 0
    first = read_metrics(tmp_path / "b")[0]
    assert first["data/skipped/chosen_equals_rejected"] == 8 and first["data/kept"] == 16


def test_verifier_values_outside_their_range_are_errors():
    from rewards.bounded import BoundedPool
    from rewards.scoring import score_batch

    with BoundedPool(1, 10.0) as pool:
        batch = score_batch(["a", "b"], ["1", "1"], ["integrity_verifiers:huge", "integrity_verifiers:plus_minus_one"],
                            pool=pool)
    assert batch.values == [0.0, -1.0] and batch.errors == 1  # 1e30 is an error; -1 is inside the declared range
    assert "outside its range [0, 1]" in batch.scores[0].reason


# ---------------------------------------------------------------- RLVR with its own local Ray (slow)

def _descendants(pid: int) -> set[int]:
    out, stack = set(), [pid]
    while stack:
        p = stack.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            kids = []
        for k in map(int, kids):
            if k not in out:
                out.add(k)
                stack.append(k)
    return out


def _listening(pids: set[int]) -> list[str]:
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    return [line.split()[3] for line in out.splitlines()
            if {int(p) for p in re.findall(r"pid=(\d+)", line)} & pids]


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for p in pids:
        try:
            if "zombie" not in Path(f"/proc/{p}/status").read_text().lower():
                alive.add(p)
        except OSError:
            pass
    return alive


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "rlvr.cli", *argv], env=env, capture_output=True, text=True,
                          timeout=600, **kw)


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error")]


@pytest.mark.slow
@pytest.mark.ray
def test_rlvr_run_folder_integrity_with_its_own_ray(tiny_model_dir, tmp_path):
    out = tmp_path / "rl"
    common = rlvr_args(tiny_model_dir, out, "checkpoints.save_every=1")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    # more steps than the checks below can take: the driver must still be running when it is killed (a tiny step
    # takes well under a second on a fast CPU)
    driver = subprocess.Popen([sys.executable, "-m", "rlvr.cli", *common, "train.total_steps=400"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        marker = out / "checkpoints" / "latest"
        deadline = time.monotonic() + 400
        # step 2 or later: a fast run may seal step 3 between two looks
        while not (marker.is_file() and marker.read_text().strip() >= "step_00000002"):
            assert driver.poll() is None and time.monotonic() < deadline, "no step-2 checkpoint"
            time.sleep(0.5)
        # a second writer is refused at once, naming the holder, before any Ray of its own
        second = _run([*common, "train.total_steps=400"])
        errors = _errors(second.stderr)
        assert second.returncode == 2 and len(errors) == 1 and f"pid {driver.pid}" in errors[0], second.stderr[-2000:]
        assert "Started a local Ray" not in second.stderr
        # the local Ray this driver started listens on loopback only. Not Ray's: the learners' torch.distributed
        # TCPStore (actors.json "rendezvous") binds every interface whatever its address; torch has no option
        family = _descendants(driver.pid)
        store_port = json.loads((out / "actors.json").read_text())["rendezvous"].rsplit(":", 1)[1]
        addresses = [a for a in _listening(family | {driver.pid}) if a.rsplit(":", 1)[1] != store_port]
        outside = [a for a in addresses if a.rsplit(":", 1)[0] not in ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]")]
        assert len(addresses) >= 5 and not outside, addresses
        os.kill(driver.pid, signal.SIGKILL)  # the driver only: Ray's own processes must not outlive it
        driver.wait()
        deadline = time.monotonic() + 30  # Ray alone leaves its agents ~60 s (a hard-coded GCS timeout)
        while _alive(family) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _alive(family), [Path(f"/proc/{p}/cmdline").read_bytes()[:60] for p in _alive(family)]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)  # its own session: only what this test started
            driver.wait()
    ckpts = out / "checkpoints"
    mgr = CheckpointManager(ckpts)
    k = CheckpointManager.step_of(mgr.latest())  # the driver got a few steps further while we looked
    name = CheckpointManager.step_name
    # two kept; a third (k-2) only when the kill landed between sealing step k and rotating the oldest away
    kept = [p.name for p in mgr.folders()]
    assert kept in ([name(k), name(k - 1)], [name(k), name(k - 1), name(k - 2)]), kept

    # data changed since the checkpoint: refused before Ray starts
    changed = _run([*common, f"train.total_steps={k + 1}", 'data.train=["procedural:gsm8k?n=64&seed=1"]'])
    assert changed.returncode == 2 and len(_errors(changed.stderr)) == 1, changed.stderr[-2000:]
    assert "trained on other data" in changed.stderr and "Started a local Ray" not in changed.stderr

    # the newest checkpoint's DeepSpeed state corrupted (same size): resumed from the one before, which survives
    flip_4kb(next((ckpts / name(k) / "policy").rglob("*model_states.pt")))
    resumed = _run([*common, f"train.total_steps={k + 1}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{name(k)} is skipped" in resumed.stderr and re.search(rf"resumed from \S+{name(k - 1)}", resumed.stderr)
    assert [r["step"] for r in read_metrics(out)] == list(range(1, k + 2))
    assert [p.name for p in mgr.folders()] == [name(k + 1), name(k)]
    assert all(verify(p) is None for p in mgr.folders())

    # a non-finite update (the lr=1e4 at step 1; a resumed run keeps its checkpoint's LR schedule, so this
    # runs in a folder of its own) stops the run before anything is saved
    nan_out = tmp_path / "nan"
    nan = _run(rlvr_args(tiny_model_dir, nan_out, "checkpoints.save_every=1", "train.total_steps=3", "optim.lr=1e4",
                         "optim.max_grad_norm=1e9"))
    assert nan.returncode == 1 and len(_errors(nan.stderr)) == 1, nan.stderr[-3000:]
    assert re.search(r"step 1: \S+ is (nan|inf)", nan.stderr) and "stopped before saving" in nan.stderr
    assert CheckpointManager(nan_out / "checkpoints").folders() == []

    # every checkpoint damaged (a pickle payload in one, a corrupt tensor file in the other): exit 2, nothing runs
    payload = tmp_path / "payload-ran"
    plant_payload(ckpts / name(k + 1) / "trainer_state.pt", payload)
    reseal(ckpts / name(k + 1))
    flip_4kb(ckpts / name(k) / "hf" / "model.safetensors")
    damaged = _run([*common, f"train.total_steps={k + 4}"])
    assert damaged.returncode == 2 and len(_errors(damaged.stderr)) == 1, damaged.stderr[-3000:]
    assert "none usable" in damaged.stderr and "Started a local Ray" not in damaged.stderr
    assert not payload.exists()

"""Run untrusted Python in a separate, isolated, resource-limited process: the code verifier's and tools' sandbox.

    from rewards.sandbox import SandboxLimits, run_python, isolation_modes
    res = run_python("print(input()[::-1])", stdin="abc", limits=SandboxLimits(wall_s=2))
    res.stdout, res.exit_code, res.timed_out, res.killed_reason, res.mode   # "cba\\n", 0, False, "", "bwrap"

Every call starts a fresh process tree, waits at most `limits.wall_s` (+ a few seconds of clean-up, bounded), and
returns a `SandboxResult`; the program's failures (crash, limit, timeout) are results, never exceptions. The code
never runs in the calling process. Modes, chosen by `mode=`, else $RLVR_SANDBOX, else "auto" (the first of
"bwrap", "unshare" that works on this machine; `isolation_modes()` says exactly what each gives):

- "bwrap": bubblewrap (Debian's `bubblewrap`, or $RLVR_BWRAP naming a bwrap binary). New user, pid, network,
  IPC, UTS and cgroup namespaces; a new root file system holding only read-only /usr, /bin, /lib*, the
  interpreter's prefix, a minimal /dev and a fresh /proc; the per-call directory (/sandbox) is the only writable
  place; all capabilities dropped, new session (no terminal injection), killed when the caller dies.
- "unshare": util-linux `unshare` (no bubblewrap needed): new user, mount, pid, network, IPC and UTS namespaces,
  a fresh /proc; every mount is made read-only (mount_setattr, Linux >= 5.12) except the per-call directory;
  capabilities dropped. Unlike bwrap the host's files stay READABLE (as the calling user).
- "unsafe-rlimits-only": no isolation at all, only the limits below; must be asked for by name (argument or
  $RLVR_SANDBOX) and logs a warning. The code runs as you, with your files and your network.

In every mode: a clean environment (nothing of the caller's is passed), the per-call temporary directory as the
working directory and $HOME, and limits per process: CPU seconds (RLIMIT_CPU), address space (RLIMIT_AS), file
size (RLIMIT_FSIZE, which also caps stdout/stderr), processes (RLIMIT_NPROC) and open files; core dumps off. At
`wall_s` the whole tree is killed: its process group, and in the namespace modes the pid namespace (the kernel
kills every process in it when its first process dies). Linux does not apply RLIMIT_NPROC to root: when the caller
is root, a pids cgroup (v1 `pids` hierarchy, or v2 with the pids controller) caps the process count if one can be
created, otherwise only the wall-clock kill bounds a fork bomb (`SandboxResult.notes` says which).

It is not a virtual machine: the code shares the host kernel, so a kernel bug can break out; CPU and memory are
limited per process, not for the tree as a whole (up to `max_processes` x `memory_mb`).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

MODES = ("bwrap", "unshare", "unsafe-rlimits-only")
UNSAFE = "unsafe-rlimits-only"
MODE_ENV = "RLVR_SANDBOX"
BWRAP_ENV = "RLVR_BWRAP"
SANDBOX_DIR = "/sandbox"  # the working directory's path inside bwrap
_KILL_GRACE_S = 5.0  # after a kill, how long to wait for the tree to be reaped (bounded)


class SandboxUnavailable(RuntimeError):
    """The requested (or any) isolation mode cannot run here; the message says what was tried and what to do."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-execution limits. CPU, memory and file size apply to each process of the program."""

    wall_s: float = 5.0  # wall-clock seconds until the whole process tree is killed
    cpu_s: float = 5.0  # CPU seconds per process (SIGXCPU, then SIGKILL one second later)
    memory_mb: int = 512  # address space per process (RLIMIT_AS): allocations past it fail (MemoryError)
    file_size_mb: int = 16  # largest file a process may write, stdout/stderr included (SIGXFSZ past it)
    max_processes: int = 32  # processes and threads (RLIMIT_NPROC; a pids cgroup when the caller is root)
    max_open_files: int = 64
    max_output_chars: int = 65_536  # stdout and stderr are each truncated to this in the result

    def __post_init__(self) -> None:
        for name in ("wall_s", "cpu_s", "memory_mb", "file_size_mb", "max_processes", "max_open_files",
                     "max_output_chars"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"SandboxLimits.{name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class SandboxResult:
    """What happened. `exit_code` is the program's exit status, or -N when signal N ended it (None if it never
    started). `killed_reason` is "" for a normal exit, else why it was stopped: "wall time limit", "cpu time
    limit", "file size limit", "signal SIGKILL", ... `notes` lists weakened guarantees (e.g. no pids cgroup)."""

    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool
    killed_reason: str
    wall_s: float
    mode: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.killed_reason


# ---------------------------------------------------------------------------------------------------------------
# The launcher: trusted code run as the first process inside the sandbox (python -I -S -c _LAUNCHER ARGS). It
# joins the pids cgroup (fd), locks the file system down in "unshare" mode, drops capabilities, then forks the
# program with its rlimits and reports how it ended on the status fd. Standard library only.
_LAUNCHER = r"""
import ctypes, os, resource, signal, sys
mode, workdir, status_fd, cgroup_fd, python = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
cpu_s, mem_mb, fsize_mb, nproc, nofile = (int(x) for x in sys.argv[6:11])
env = dict(kv.split("=", 1) for kv in sys.argv[11].split("\n") if kv)
prog = sys.argv[12:]
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the process that started us
def fail(what):
    os.write(status_fd, ("setup " + what).encode()); os._exit(121)
if cgroup_fd >= 0:
    try:
        os.write(cgroup_fd, b"0")  # "0": move the writer into the cgroup; everything forked later inherits it
    except OSError as e:
        fail("cannot join the pids cgroup: %s" % e)
    os.close(cgroup_fd)
if mode == "unshare":
    class MountAttr(ctypes.Structure):
        _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                    ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]
    MS_BIND, MS_REC, RDONLY, NOSUID, AT_RECURSIVE, SYS_mount_setattr = 4096, 16384, 1, 2, 0x8000, 442
    def setattr_(path, flags, attr_set, attr_clr):
        a = MountAttr(attr_set, attr_clr, 0, 0)
        if libc.syscall(SYS_mount_setattr, -100, path.encode(), flags, ctypes.byref(a), ctypes.sizeof(a)) != 0:
            fail("mount_setattr(%s): %s (needs Linux >= 5.12)" % (path, os.strerror(ctypes.get_errno())))
    if libc.mount(workdir.encode(), workdir.encode(), None, MS_BIND | MS_REC, None) != 0:
        fail("bind mount of %s: %s" % (workdir, os.strerror(ctypes.get_errno())))
    setattr_("/", AT_RECURSIVE, RDONLY | NOSUID, 0)  # every mount read-only ...
    setattr_(workdir, 0, 0, RDONLY)  # ... except the working directory
if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
    fail("PR_SET_NO_NEW_PRIVS failed")
for cap in range(64):  # empty the bounding set: the program (exec'd below) gets no capabilities, even as root
    libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP; EINVAL past the last capability is fine
os.chdir(workdir)
pid = os.fork()
if pid == 0:
    try:
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        mb = 1 << 20
        def cap(res, soft, hard=None):
            hard = soft if hard is None else hard
            old_hard = resource.getrlimit(res)[1]
            if old_hard != resource.RLIM_INFINITY:
                soft, hard = min(soft, old_hard), min(hard, old_hard)
            resource.setrlimit(res, (soft, hard))
        cap(resource.RLIMIT_CPU, cpu_s, cpu_s + 1)
        cap(resource.RLIMIT_AS, mem_mb * mb)
        cap(resource.RLIMIT_FSIZE, fsize_mb * mb)
        cap(resource.RLIMIT_NPROC, nproc)
        cap(resource.RLIMIT_NOFILE, nofile)
        cap(resource.RLIMIT_CORE, 0)
        os.closerange(3, 65536)
        os.execve(python, [python] + prog, env)
    except BaseException as e:
        os.write(2, ("sandbox launcher: cannot start the program: %r\n" % (e,)).encode())
    os._exit(122)
while True:  # reap every child (we may be pid 1); report the program's own status
    try:
        got, status = os.wait()
    except ChildProcessError:
        break
    if got == pid:
        if os.WIFSIGNALED(status):
            os.write(status_fd, b"signal %d" % os.WTERMSIG(status))
        else:
            os.write(status_fd, b"exit %d" % os.WEXITSTATUS(status))
        break
os._exit(0)
"""

# For "unshare" mode: `unshare` itself must die with its caller (its --kill-child then kills the namespace).
_PDEATH_EXEC = ("import ctypes, os, signal, sys\n"
                "ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)\n"
                "os.execv(sys.argv[1], sys.argv[1:])\n")

_SIGNAL_REASONS = {signal.SIGXCPU: "cpu time limit", signal.SIGXFSZ: "file size limit"}


# ---------------------------------------------------------------------------------------------------------------
def isolation_modes() -> dict[str, dict[str, object]]:
    """Each mode: what it isolates ("gives"), what it does not ("lacks"), and whether it works here ("available",
    found by running a trivial program in it once per process; "problem" says why not)."""
    common = ["separate process tree, killed as a whole at the wall-time limit", "clean environment",
              "fresh temporary working directory", "rlimits: CPU, address space, file size, processes, open files"]
    info: dict[str, dict[str, object]] = {
        "bwrap": {
            "gives": common + ["no network (empty network namespace)", "own pid namespace: cannot see or signal "
                               "host processes", "own user, IPC, UTS, cgroup namespaces",
                               "file system: only read-only /usr, /bin, /lib*, the interpreter; /sandbox writable",
                               "no capabilities, new session, dies with its caller"],
            "lacks": ["not a VM: shares the host kernel", "limits are per process, not per tree",
                      "as root: RLIMIT_NPROC is not enforced (a pids cgroup is used when available)"]},
        "unshare": {
            "gives": common + ["no network (empty network namespace)", "own pid namespace and /proc",
                               "own user, mount, IPC, UTS namespaces", "every mount read-only except the "
                               "working directory", "no capabilities, dies with its caller"],
            "lacks": ["the host's files are readable (as the calling user)", "not a VM: shares the host kernel",
                      "limits are per process, not per tree",
                      "as root: RLIMIT_NPROC is not enforced (a pids cgroup is used when available)"]},
        UNSAFE: {
            "gives": common,
            "lacks": ["NO isolation: network, your files (read and write) and your processes are reachable",
                      "a program that calls setsid() escapes the kill of its process group"]},
    }
    for mode, entry in info.items():
        problem = _probe(mode)
        entry["available"] = problem is None
        entry["problem"] = problem or ""
    return info


def available_modes() -> list[str]:
    """The isolating modes that work here, best first (never includes the unsafe one)."""
    return [m for m in ("bwrap", "unshare") if _probe(m) is None]


def resolve_mode(mode: str | None = None) -> str:
    """The mode a call with `mode` uses: the argument, else $RLVR_SANDBOX, else "auto". SandboxUnavailable if it
    cannot run here; ValueError for an unknown name."""
    requested = mode or os.environ.get(MODE_ENV, "").strip() or "auto"
    if requested not in (*MODES, "auto"):
        where = "mode" if mode else f"${MODE_ENV}"
        raise ValueError(f"sandbox {where}={requested!r}: must be one of auto, {', '.join(MODES)}")
    if requested == "auto":
        modes = available_modes()
        if not modes:
            raise SandboxUnavailable(
                "no isolating sandbox works here: "
                + "; ".join(f"{m}: {_probe(m)}" for m in ("bwrap", "unshare"))
                + f". Install bubblewrap (apt-get install bubblewrap) or allow user namespaces; to run untrusted "
                  f"code with rlimits only and NO isolation, set {MODE_ENV}={UNSAFE} (or mode={UNSAFE!r})")
        return modes[0]
    problem = _probe(requested)
    if problem is not None:
        raise SandboxUnavailable(f"sandbox mode {requested!r} does not work here: {problem}")
    if requested == UNSAFE:
        _warn_unsafe()
    return requested


@functools.lru_cache(maxsize=1)
def _warn_unsafe() -> None:
    log.warning("SANDBOX MODE %s: untrusted code runs WITHOUT isolation (your user, files, network, processes); "
                "only rlimits and a wall-time kill apply", UNSAFE)


_probe_lock = threading.Lock()
_probe_cache: dict[str, str | None] = {}


def _probe(mode: str) -> str | None:
    """None if `mode` runs a trivial program correctly here, else why not (cached per process)."""
    with _probe_lock:
        if mode not in _probe_cache:
            _probe_cache[mode] = _probe_uncached(mode)
        return _probe_cache[mode]


def _probe_uncached(mode: str) -> str | None:
    if sys.platform != "linux":
        return f"needs Linux (this is {sys.platform})"
    if mode == "bwrap" and _bwrap_path() is None:
        return f"bwrap not found (apt-get install bubblewrap, or set ${BWRAP_ENV})"
    if mode == "unshare" and shutil.which("unshare") is None:
        return "util-linux unshare not found"
    try:
        res = _run(mode, "print(6 * 7)", "", SandboxLimits(wall_s=10, cpu_s=5))
    except OSError as err:
        return f"cannot start: {err}"
    if res.ok and res.stdout.strip() == "42":
        return None
    detail = (res.stderr.strip() or res.killed_reason or f"exit code {res.exit_code}").splitlines()
    return f"test program failed ({detail[-1][:300] if detail else 'no output'})"


def _bwrap_path() -> str | None:
    env = os.environ.get(BWRAP_ENV)
    if env:
        return env if os.access(env, os.X_OK) else None
    return shutil.which("bwrap")


def sandbox_python() -> str:
    """The interpreter the programs run with: the caller's (resolved past a virtualenv's link), run with -I, so it
    sees the standard library and its own site-packages, not the virtualenv's."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return os.path.realpath(base)


# ---------------------------------------------------------------------------------------------------------------
def run_python(code: str, *, stdin: str = "", limits: SandboxLimits | None = None,
               mode: str | None = None) -> SandboxResult:
    """Run `code` as a Python program in a fresh sandbox (see the module docstring); returns within about
    `limits.wall_s` + 5 s. SandboxUnavailable if no allowed mode works here (nothing is run then)."""
    if not isinstance(code, str):
        raise TypeError(f"run_python: code must be a str, got {type(code).__name__}")
    if not isinstance(stdin, str):
        raise TypeError(f"run_python: stdin must be a str, got {type(stdin).__name__}")
    return _run(resolve_mode(mode), code, stdin, limits or SandboxLimits())


def _clean_env(home: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"}


def _run(mode: str, code: str, stdin: str, limits: SandboxLimits) -> SandboxResult:
    start = time.monotonic()
    base = tempfile.mkdtemp(prefix="rlvr-sandbox-")
    notes: list[str] = []
    cgroup = _PidsCgroup.create(limits.max_processes) if os.geteuid() == 0 else None
    if os.geteuid() == 0 and cgroup is None:
        notes.append("running as root and no pids cgroup could be made: the process count is bounded only by the "
                     "wall-time kill")
    proc = None
    status_r = status_w = -1
    try:
        work = os.path.join(base, "work")
        os.mkdir(work, 0o700)
        with open(os.path.join(work, "main.py"), "w", encoding="utf-8") as f:
            f.write(code)
        inside = SANDBOX_DIR if mode == "bwrap" else work
        python = sandbox_python()
        env = _clean_env(inside)
        status_r, status_w = os.pipe()
        cg_fd = cgroup.open_procs() if cgroup is not None else -1
        launcher_args = [mode, inside, str(status_w), str(cg_fd), python,
                         str(max(1, int(limits.cpu_s + 0.999))), str(int(limits.memory_mb)),
                         str(int(limits.file_size_mb)), str(int(limits.max_processes)),
                         str(int(limits.max_open_files)), "\n".join(f"{k}={v}" for k, v in env.items()),
                         "-I", "-B", os.path.join(inside, "main.py")]
        launcher = [python, "-I", "-S", "-c", _LAUNCHER, *launcher_args]
        argv = _wrap(mode, launcher, work, python)
        with open(os.path.join(base, "stdin"), "w", encoding="utf-8") as f:
            f.write(stdin)
        fds = tuple(fd for fd in (status_w, cg_fd) if fd >= 0)
        with open(os.path.join(base, "stdin"), "rb") as fin, open(os.path.join(base, "stdout"), "wb") as fout, \
                open(os.path.join(base, "stderr"), "wb") as ferr:
            try:
                proc = subprocess.Popen(argv, stdin=fin, stdout=fout, stderr=ferr, env=env, cwd=work,
                                        pass_fds=fds, close_fds=True, start_new_session=True)
            finally:
                os.close(status_w)
                status_w = -1
                if cg_fd >= 0:
                    os.close(cg_fd)
            timed_out = False
            try:
                proc.wait(timeout=max(0.0, limits.wall_s - (time.monotonic() - start)))
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_tree(proc, cgroup)  # also after a normal exit: no background process outlives the call
        status = _read_status(status_r)
        stdout = _read_text(os.path.join(base, "stdout"), limits.max_output_chars)
        stderr = _read_text(os.path.join(base, "stderr"), limits.max_output_chars)
    finally:
        for fd in (status_r, status_w):
            if fd >= 0:
                os.close(fd)
        if proc is not None and proc.poll() is None:
            _kill_tree(proc, cgroup)
        if cgroup is not None:
            cgroup.remove()
        shutil.rmtree(base, ignore_errors=True)
    exit_code, reason = _verdict(status, proc.returncode, timed_out)
    if status.startswith("setup "):
        stderr = f"sandbox set-up failed: {status[6:]}\n" + stderr
    return SandboxResult(stdout, stderr, exit_code, timed_out, reason, round(time.monotonic() - start, 3), mode,
                         tuple(notes))


def _wrap(mode: str, launcher: list[str], work: str, python: str) -> list[str]:
    """The command line that starts the launcher in `mode`."""
    if mode == "bwrap":
        argv = [_bwrap_path() or "bwrap", "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc",
                "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
                "--clearenv"]
        for path in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(path):
                argv += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                argv += ["--ro-bind", path, path]
        prefix = _interpreter_prefix(python)
        if prefix and not prefix.startswith("/usr/"):
            argv += ["--ro-bind", prefix, prefix]
        argv += ["--dev", "/dev", "--proc", "/proc", "--bind", work, SANDBOX_DIR, "--chdir", SANDBOX_DIR,
                 "--remount-ro", "/"]
        for key, value in _clean_env(SANDBOX_DIR).items():
            argv += ["--setenv", key, value]
        return argv + ["--", *launcher]
    if mode == "unshare":
        unshare = shutil.which("unshare") or "unshare"
        return [launcher[0], "-I", "-S", "-c", _PDEATH_EXEC, unshare, "--user", "--map-root-user", "--mount",
                "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--ipc", "--uts", "--", *launcher]
    return launcher


def _interpreter_prefix(python: str) -> str:
    """The directory holding the interpreter's bin/ and lib/ (e.g. a pyenv version), to bind read-only."""
    return os.path.dirname(os.path.dirname(python))


def _kill_tree(proc: subprocess.Popen, cgroup: _PidsCgroup | None) -> None:
    """SIGKILL the process group (the namespace modes: its pid namespace dies with it) and the cgroup's members;
    wait (bounded) for the started process."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if cgroup is not None:
        cgroup.kill_all()
    try:
        proc.wait(timeout=_KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        log.error("sandbox: process %d did not exit %.0f s after SIGKILL", proc.pid, _KILL_GRACE_S)


def _read_status(fd: int) -> str:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 4096).decode("ascii", "replace").strip()
    except BlockingIOError:
        return ""


def _read_text(path: str, limit: int) -> str:
    with open(path, "rb") as f:
        data = f.read(limit * 4 + 4)
    text = data.decode("utf-8", "replace")
    return text[:limit] + ("\n[... output truncated]" if len(text) > limit else "")


def _verdict(status: str, returncode: int | None, timed_out: bool) -> tuple[int | None, str]:
    """(exit code, killed reason) from the launcher's report, else the started process's return code."""
    kind, _, num = status.partition(" ")
    if kind == "exit" and num.isdigit():
        code = int(num)
        return code, "wall time limit" if timed_out else ""
    if kind == "signal" and num.isdigit():
        sig = int(num)
        return -sig, "wall time limit" if timed_out else _signal_reason(sig)
    if timed_out:
        return None, "wall time limit"
    if kind == "setup":
        return None, "sandbox set-up failed"
    if returncode is not None and returncode < 0:
        return None, f"sandbox ended by {_signal_reason(-returncode)}"
    return None, f"sandbox ended without a status (exit code {returncode})"


def _signal_reason(sig: int) -> str:
    if sig in _SIGNAL_REASONS:
        return _SIGNAL_REASONS[sig]
    try:
        return f"signal {signal.Signals(sig).name}"
    except ValueError:
        return f"signal {sig}"


class _PidsCgroup:
    """A pids cgroup for one execution (only made when running as root, where RLIMIT_NPROC does not apply)."""

    _counter = 0
    _lock = threading.Lock()

    def __init__(self, path: str):
        self.path = path

    @classmethod
    def create(cls, max_pids: int) -> _PidsCgroup | None:
        parent = cls._parent()
        if parent is None:
            return None
        with cls._lock:
            cls._counter += 1
            name = f"{os.getpid()}-{cls._counter}"
        path = os.path.join(parent, name)
        try:
            os.makedirs(path)
            with open(os.path.join(path, "pids.max"), "w") as f:
                f.write(str(int(max_pids)))
        except OSError as err:
            log.debug("sandbox: no pids cgroup at %s: %s", path, err)
            try:
                os.rmdir(path)
            except OSError:
                pass
            return None
        return cls(path)

    @staticmethod
    @functools.lru_cache(maxsize=1)
    def _parent() -> str | None:
        v1 = "/sys/fs/cgroup/pids"
        v2 = "/sys/fs/cgroup"
        candidates = []
        if os.path.isfile(os.path.join(v1, "cgroup.procs")):
            candidates.append(os.path.join(v1, "rlvr-sandbox"))
        try:
            with open(os.path.join(v2, "cgroup.subtree_control")) as f:
                if "pids" in f.read().split():
                    candidates.append(os.path.join(v2, "rlvr-sandbox"))
        except OSError:
            pass
        for parent in candidates:
            try:
                os.makedirs(parent, exist_ok=True)
                if parent.startswith(v2 + "/rlvr") and not parent.startswith(v1):
                    with open(os.path.join(parent, "cgroup.subtree_control"), "w") as f:
                        f.write("+pids")
                return parent
            except OSError as err:
                log.debug("sandbox: cannot use %s for pids cgroups: %s", parent, err)
        return None

    def open_procs(self) -> int:
        return os.open(os.path.join(self.path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)

    def pids(self) -> list[int]:
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as f:
                return [int(line) for line in f if line.strip()]
        except OSError:
            return []

    def kill_all(self) -> None:
        for _ in range(50):  # members may fork while we kill: repeat until empty (pids.max bounds the count)
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)

    def remove(self) -> None:
        for _ in range(100):  # killed processes leave the cgroup once reaped: bounded retries (~1 s)
            try:
                os.rmdir(self.path)
                return
            except OSError as err:
                if err.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    log.warning("sandbox: cannot remove cgroup %s: %s", self.path, err)
                    return
            self.kill_all()
            time.sleep(0.01)
        log.warning("sandbox: cgroup %s still busy; left behind", self.path)

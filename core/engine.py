"""DeepSpeed engine set-up shared by every trainer (SFT, DPO, RM, and the RLVR learners), from the configs in
core.run (OptimConfig, EngineConfig, DistConfig).

One place decides: the torch.distributed group (gloo on CPU, NCCL on CUDA), the DeepSpeed config (ZeRO stage,
precision, gradient accumulation, clipping), the client optimizer (torch AdamW: no compile step) and the LR
schedule (warm-up, then constant/linear/cosine).

Precision (`precision_for`, engine.precision): fp32, or bf16 with gradients accumulated in fp32. DeepSpeed 0.19
accumulates bf16 gradients in fp32 under ZeRO 2 and 3 with `data_types.grad_accum_dtype: fp32`; under ZeRO 0 it
refuses that mix (its bf16 mode sums micro-batch gradients in bf16), so bf16 under ZeRO 0 is torch.autocast over
fp32 weights (DeepSpeed's `torch_autocast`): the same 16 bytes per trained parameter as DeepSpeed's bf16 with its
fp32 master copy, and fp32 gradients. Under ZeRO 1 its bf16 optimizer drops small micro-batch gradients even
with fp32 accumulation (measured), so bf16 there is refused. Frozen models (the reference policy) get an engine without an optimizer, which DeepSpeed
accepts only at ZeRO 0 and 3: stage 0 unless the run is ZeRO-3 (then partitioned like the policy), computing in
the same precision as the trained models, so the KL to the reference starts at 0.

DeepSpeed is imported inside the functions that use it, after `init_distributed` has set DS_ACCELERATOR:
DeepSpeed picks its accelerator once, when it is first imported.
"""

from __future__ import annotations

import datetime
import math
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any

import psutil  # comes with ray[default]
import torch
import torch.distributed as dist

from core.device import DeviceInfo, cpu_supports_bf16, detect_device
from core.logging import get_logger
from core.run import ZERO1_BF16, EngineConfig, OptimConfig

log = get_logger(__name__)


def lr_lambda(optim: OptimConfig, total_steps: int):
    """Multiplier on the peak LR at step `s`: linear warm-up, then constant / linear / cosine decay to 0."""
    warmup = optim.warmup_for(total_steps)
    total = max(total_steps, 1)

    def fn(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if optim.lr_scheduler == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if optim.lr_scheduler == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return fn


def _skip_shm_comm_build() -> None:
    # deepspeed.init_distributed JIT-compiles an inference-only shared-memory all-reduce op on CPU (~90 s).
    # Patch the module object actually used (see ENVIRONMENT.md: `import deepspeed.comm.torch as m` patches
    # the wrong one).
    import deepspeed.comm  # noqa: F401  (lazy: see the module docstring)

    mod = sys.modules.get("deepspeed.comm.torch")
    if mod is not None and hasattr(mod, "build_shm_op"):
        mod.build_shm_op = lambda: None


def init_distributed(rank: int, world_size: int, *, master_addr: str | None = None, master_port: int,
                     device: DeviceInfo, local_rank: int | None = None, rendezvous_timeout_s: float | None = None,
                     timeout_s: float | None = None, node_ip: str | None = None) -> None:
    """Join (or create) the torch.distributed group through DeepSpeed; idempotent within a process.

    With `rendezvous_timeout_s` (the RLVR learners) the group is formed here on an explicit TCPStore at
    `master_addr:master_port`: every rank must reach it within that time, else `RendezvousError` names the address
    and rank; collectives afterwards time out after `timeout_s`. `node_ip`: this process's own address; gloo binds
    the interface that holds it (by default gloo binds whatever the hostname resolves to, often 127.0.0.1, which a
    rank on another node cannot reach)."""
    os.environ.setdefault("DS_ACCELERATOR", device.kind)
    import deepspeed  # lazy: see the module docstring

    _forget_destroyed_groups()
    if device.kind == "cpu":
        _skip_shm_comm_build()  # also when adopting a group: deepspeed.init_distributed would build it either way
    if dist.is_available() and dist.is_initialized():
        # Someone made the group already (a launcher, or vLLM's in-process engine, which builds a 1-rank group
        # without exporting the variables DeepSpeed asserts on): adopt it and fill in what it left unset.
        for key, value in (("RANK", dist.get_rank()), ("WORLD_SIZE", dist.get_world_size()),
                           ("LOCAL_RANK", rank if local_rank is None else local_rank)):
            os.environ.setdefault(key, str(value))
        deepspeed.init_distributed(dist_backend=dist.get_backend(), auto_mpi_discovery=False)
        return
    master_addr = master_addr or "127.0.0.1"
    os.environ.update({
        "RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank if local_rank is None else local_rank),
        "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port),
    })
    if node_ip:
        bind_gloo_to(node_ip)
    if rendezvous_timeout_s is None:
        deepspeed.init_distributed(dist_backend=device.dist_backend, auto_mpi_discovery=False)
        return
    try:
        store = tcp_store(master_addr, master_port, world_size, is_master=rank == 0,
                          timeout=datetime.timedelta(seconds=rendezvous_timeout_s))
    except (RuntimeError, OSError) as err:  # DistNetworkError / DistStoreError are RuntimeErrors
        raise RendezvousError(f"rank {rank} of {world_size} could not complete the torch.distributed rendezvous at "
                              f"{master_addr}:{master_port} within {rendezvous_timeout_s:.0f} s "
                              f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from err
    ops = datetime.timedelta(seconds=timeout_s) if timeout_s else datetime.timedelta(minutes=30)
    dist.init_process_group(device.dist_backend, store=store, rank=rank, world_size=world_size, timeout=ops)
    deepspeed.init_distributed(dist_backend=device.dist_backend, auto_mpi_discovery=False)  # adopts the group


def _forget_destroyed_groups() -> None:
    """DeepSpeed keeps a clone of the world group in a module global and reuses it for every later engine. When the
    default group it was cloned from is destroyed (vLLM's in-process engine destroys the group it made when the
    engine is freed), the next engine in this process would broadcast over a dead group ("Group ... is not
    registered"): forget the clone once torch no longer knows it, so DeepSpeed clones the live group again."""
    from deepspeed.utils import groups  # lazy: see the module docstring

    if groups._WORLD_GROUP is not None and groups._WORLD_GROUP not in dist.distributed_c10d._world.pg_map:
        groups._WORLD_GROUP = None


def barrier() -> None:
    """A barrier over the process group, when there is one of more than one rank."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_reduce_sum(t):
    """Sum a tensor over the process group in place (a no-op without a group of more than one rank)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


class RendezvousError(RuntimeError):
    """A rank could not reach (or form) its process group in time."""


# the listening sockets of the TCPStore servers this process hosts: the store serves on their file descriptors,
# which must stay open as long as it does (the process's life: a run forms its groups once)
_STORE_LISTENERS: list[socket.socket] = []


def tcp_store(host: str, port: int, world_size: int, *, is_master: bool, timeout: datetime.timedelta):
    """A torch.distributed TCPStore at `host:port`. The master's server listens on `host` only: torch's own server
    binds every interface of the machine, so a learner group's store would be open to anyone who can reach the
    node (docs/ray_job.md, "Sockets"). A client connects to `host:port` as usual."""
    listen_fd = None
    if is_master:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(1024)
        _STORE_LISTENERS.append(listener)
        listen_fd = listener.fileno()
    return dist.TCPStore(host, port, world_size, is_master=is_master, timeout=timeout, master_listen_fd=listen_fd)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` ("" = every interface of this machine: what a TCPStore server binds)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def interface_with_address(ip: str) -> str | None:
    """The name of this machine's network interface that holds IPv4 address `ip` (None if none does)."""
    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == ip for a in addrs):
            return name
    return None


def bind_gloo_to(ip: str) -> None:
    """Make gloo groups created by this process use the interface holding `ip` (unless GLOO_SOCKET_IFNAME is
    already set by the user)."""
    if os.environ.get("GLOO_SOCKET_IFNAME"):
        return
    name = interface_with_address(ip)
    if name is not None:
        os.environ["GLOO_SOCKET_IFNAME"] = name


class EngineSetupError(ValueError):
    """An engine setting this device or DeepSpeed cannot do; one line naming the key (the CLIs exit 2)."""


@dataclass(frozen=True)
class Precision:
    """How an engine holds its weights and computes (`precision_for`)."""

    weights: str  # "float32" | "bfloat16": the module's parameters as DeepSpeed holds them
    autocast: bool  # bf16 matmuls under torch.autocast over fp32 weights (DeepSpeed's torch_autocast)

    @property
    def compute(self) -> str:
        """The dtype the matmuls run in: what a log-prob computed by this engine is rounded to."""
        return "bfloat16" if self.weights == "bfloat16" or self.autocast else "float32"


def precision_for(engine: EngineConfig, device: DeviceInfo) -> Precision:
    """engine.precision on `device` (see the module docstring). bf16 on a GPU without native bf16 is an error;
    on a CPU without it (AVX-512 BF16 / AMX) it runs, emulated and slowly, with a warning."""
    wanted = engine.precision
    if wanted == "auto":
        wanted = "bf16" if device.kind == "cuda" and device.param_dtype == "bfloat16" else "fp32"
    if wanted == "fp32":
        return Precision("float32", autocast=False)
    if device.kind == "cuda" and device.param_dtype != "bfloat16":
        raise EngineSetupError("engine.precision=bf16: this GPU has no native bf16 (torch.cuda.is_bf16_supported("
                               "including_emulation=False) is False); use engine.precision=fp32")
    if engine.zero_stage == 1:
        raise EngineSetupError(ZERO1_BF16 + f" (engine.precision={engine.precision} resolved to bf16 on {device.kind})")
    if device.kind == "cpu" and not cpu_supports_bf16():
        log.warning("engine.precision=bf16 on a CPU without native bf16 (no avx512_bf16/amx_bf16 flag): bf16 is "
                    "emulated here, many times slower than fp32")
    return Precision("float32", autocast=True) if engine.zero_stage == 0 else Precision("bfloat16", autocast=False)


def deepspeed_config(optim: OptimConfig, engine: EngineConfig, *, world_size: int, device: DeviceInfo,
                     trainable: bool = True) -> dict[str, Any]:
    """The DeepSpeed config of one engine. A frozen engine (`trainable=False`) has no optimizer: ZeRO stage 0
    unless the run is ZeRO-3 (DeepSpeed refuses ZeRO 1/2 without an optimizer: they shard its state)."""
    precision = precision_for(engine, device)
    stage = engine.zero_stage if trainable or engine.zero_stage == 3 else 0
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": optim.per_device_batch_size,
        "gradient_accumulation_steps": optim.gradient_accumulation_steps,
        "train_batch_size": optim.effective_batch_size(world_size),
        "gradient_clipping": optim.max_grad_norm,
        "zero_optimization": {"stage": stage},
        "bf16": {"enabled": precision.weights == "bfloat16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if precision.weights == "bfloat16" and trainable:
        # DeepSpeed's default is the model dtype: micro-batch gradients summed in bf16 lose the small ones
        cfg["data_types"] = {"grad_accum_dtype": "fp32"}
    if precision.autocast:
        # no module's gradients reduced in bf16 (DeepSpeed's default marks nn.Linear for bf16 all-reduce)
        cfg["torch_autocast"] = {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}
    if stage == 3:
        cfg["zero_optimization"].update({"stage3_gather_16bit_weights_on_model_save": True})
    return cfg


def disable_dropout(model) -> int:
    """Turn every dropout of `model` off, whatever the architecture: `nn.Dropout` modules (p -> 0), float
    attributes named *dropout* that attention code reads at call time (Llama's `attention_dropout`), and the
    config's *dropout*/*pdrop* fields (so a re-built or saved model agrees). Returns how many were non-zero.

    RL and preference training compare log-probs of the same tokens computed at different times (old vs new
    policy, policy vs reference): dropout would make those differ by noise alone (TRL and OpenRLHF disable it)."""
    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            changed += module.p > 0
            module.p = 0.0
        for name, value in list(vars(module).items()):
            if "dropout" in name and isinstance(value, float) and not isinstance(value, bool):
                changed += value > 0
                setattr(module, name, 0.0)
    config = getattr(model, "config", None)
    if config is not None:
        for name, value in config.to_dict().items():
            if ("dropout" in name or "pdrop" in name) and isinstance(value, float):
                setattr(config, name, 0.0)
    return int(changed)


def build_engine(model, optim: OptimConfig, engine: EngineConfig, *, total_steps: int, world_size: int,
                 device: DeviceInfo | None = None, trainable: bool = True, keep_dropout: bool = False):
    """Wrap `model` in a DeepSpeed engine with AdamW and the LR schedule. The process group must exist
    (`init_distributed`). A frozen model (`trainable=False`, e.g. the reference policy) gets no optimiser (and
    ZeRO stage 0 unless the run is ZeRO-3: `deepspeed_config`).

    Dropout is switched off (`disable_dropout`) unless `keep_dropout` (SFT keeps the model's own setting). A
    trainable engine is returned in training mode: transformers only checkpoints activations in training mode,
    and `from_pretrained` returns models in eval mode, so without this `gradient_checkpointing` silently does
    nothing."""
    import deepspeed  # lazy: see the module docstring

    device = device or detect_device(engine.device, engine.num_threads)
    if not keep_dropout:
        disable_dropout(model)
    if engine.gradient_checkpointing and trainable:
        model.gradient_checkpointing_enable()
        if getattr(model, "config", None) is not None and hasattr(model.config, "use_cache"):
            model.config.use_cache = False  # a KV cache is incompatible with re-computed activations
    ds_cfg = deepspeed_config(optim, engine, world_size=world_size, device=device, trainable=trainable)
    if not ds_cfg["bf16"]["enabled"] and any(p.dtype != torch.float32 for p in model.parameters()):
        # fp32 weights (fp32 precision, or bf16 autocast under ZeRO 0): a model loaded in bf16 would otherwise
        # train in pure bf16 (DeepSpeed casts only when its own bf16 mode is on)
        model.to(torch.float32)
    if not trainable:
        model.requires_grad_(False)
        ds_engine, *_ = deepspeed.initialize(model=model, config=ds_cfg)
        ds_engine.eval()
        return ds_engine
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one vectorised kernel for the whole step (the same update; on CPU 0.1 s instead of 0.5-0.7 s per
    # step for SmolLM2-135M's parameters, 1 thread). Empty groups left out: DeepSpeed drops them, and the LR
    # schedule must see the same groups
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=optim.lr, betas=optim.betas,
                                  eps=optim.eps, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(optim, total_steps))
    ds_engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_cfg)
    ds_engine.train()
    return ds_engine


def log_batch_shape(optim: OptimConfig, world_size: int, logger=log) -> dict[str, float]:
    """Log (and return) the effective batch and the LR/BS ratio at start: the paper's quantity of interest."""
    eff = optim.effective_batch_size(world_size)
    info = {"lr": optim.lr, "per_device_batch_size": optim.per_device_batch_size,
            "gradient_accumulation_steps": optim.gradient_accumulation_steps, "world_size": world_size,
            "effective_batch_size": eff, "lr_bs_ratio": optim.lr / eff}
    logger.info("batch: %d per device x %d accumulation x %d ranks = %d effective; lr %.3g; lr/bs %.3g",
                optim.per_device_batch_size, optim.gradient_accumulation_steps, world_size, eff, optim.lr,
                info["lr_bs_ratio"])
    return info

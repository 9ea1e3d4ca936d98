"""Multi-process training under ``torchrun`` with PyTorch's DistributedDataParallel (the model zoo's way).

Every training config's shared base (``configs/train.json`` for the OCT stages, ``configs/fundus_common.json``
for the fundus ones) calls these helpers, which do nothing in a single process: the same command
becomes a distributed run when ``torchrun`` starts it (``WORLD_SIZE`` > 1), and ``configs/multi_gpu_train.json``
(the overlay MONAI Label and the model zoo expect) makes a missing ``torchrun`` an error. Under torchrun:

- ``initialize`` joins the process group (NCCL on GPUs, one per ``LOCAL_RANK``; gloo on CPUs);
- ``wrap`` puts a network (or the named parts of a composed one) in ``DistributedDataParallel``;
  the wrapper's state dict and attributes are the network's, so checkpoints and exported weights
  are the same files as a single process writes, and resume in either;
- ``sampler`` gives each rank its share of the training / validation data (``DistributedSampler``);
- handlers that write (TensorBoard, previews, exported weights, logs) carry
  ``"_disabled_": "$bundle.distributed.rank() > 0"`` in the configs; checkpoint savers stay on every
  rank (ignite's ``Checkpoint`` saves on rank 0 itself); ``InSyncCheck`` stops the run if the ranks'
  weights ever differ.
"""

from __future__ import annotations

import logging
import os
import weakref

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def requested() -> bool:
    """True when ``torchrun`` (or another launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else int(os.environ.get("WORLD_SIZE", "1"))


def device() -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` when CUDA is present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
    return torch.device("cpu")


def initialize(required: bool = False) -> int:
    """Join the process group when started by torchrun (no-op in a single process); returns the rank.

    ``required`` (``configs/multi_gpu_train.json``): refuse to run outside torchrun, naming the fix."""
    if not requested():
        if required:
            raise RuntimeError("configs/multi_gpu_train.json needs torchrun: torchrun --nproc_per_node N "
                               "-m monai.bundle run --config_file ... (WORLD_SIZE is not set)")
        return 0
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(device())
    # ignite's distributed helpers (used by its Checkpoint on every rank, which saves on rank 0 only, and by its
    # metrics) create their process groups on first use, collectively: create them now, on every rank, so a
    # handler that runs on one rank alone cannot leave the others waiting
    import ignite.distributed as idist

    idist.get_nproc_per_node()
    return dist.get_rank()


def stop_cleanly_on_sigterm(output_dir: str | os.PathLike) -> None:
    """When another process of a torchrun group fails, torchrun stops the others with SIGTERM: turn it into a
    clear message and a normal unwinding (a volume being written loses its temporary file, never leaves a
    half-written one under its final name)."""
    import signal

    if not requested():
        return

    def _stop(signum, frame):
        logging.getLogger("synthesis").error(
            f"rank {rank()}: stopped, another process of this run failed (see torchrun's report above); the volumes "
            f"already in {output_dir} are complete; run the same command again to synthesize the rest")
        raise SystemExit(1)

    signal.signal(signal.SIGTERM, _stop)


def finalize() -> None:
    """Leave the process group (after the last collective)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class DistributedModule(DistributedDataParallel):
    """``DistributedDataParallel`` that reads and writes the wrapped module's state dict (no ``module.``
    prefix) and passes attribute lookups on to it (``network.scale_factor``, ``generator.stage``).

    Only calls of the wrapper itself (its ``forward``) synchronise gradients: a training iteration that
    calls a method of the wrapped module instead would leave the ranks apart (``InSyncCheck`` stops such
    a run); ``wrap(network, parts=...)`` wraps the parts such an iteration calls."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":
                raise
            return getattr(self.module, name)

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        return self.module.state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.module.load_state_dict(state_dict, strict=strict, assign=assign)


def _nested_load_hook(module, state_dict, prefix, *args):
    """A ``DistributedModule`` inside a composed network: read ``prefix.key`` as ``prefix.module.key``."""
    for k in [k for k in state_dict if k.startswith(prefix) and not k.startswith(prefix + "module.")]:
        state_dict[prefix + "module." + k[len(prefix):]] = state_dict.pop(k)


_WRAPPED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _ddp(module: torch.nn.Module) -> torch.nn.Module:
    if isinstance(module, DistributedDataParallel):
        return module
    if module not in _WRAPPED:
        if not any(p.requires_grad for p in module.parameters()):
            return module  # frozen: nothing to synchronise
        dev = next(module.parameters()).device
        # find_unused_parameters: stages train parts of a network (DR-GAN's G_l only after its global
        # epochs); broadcast_buffers off: rank 0 alone calls the networks in its preview / metric handlers
        import inspect

        no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in
                   inspect.signature(DistributedDataParallel.__init__).parameters else {"broadcast_buffers": False})
        _WRAPPED[module] = DistributedModule(module, device_ids=[dev] if dev.type == "cuda" else None,
                                             find_unused_parameters=True, **no_sync)
    return _WRAPPED[module]


def wrap(network: torch.nn.Module, parts: list[str] | None = None) -> torch.nn.Module:
    """The network for the trainer: itself in a single process; under torchrun the network in a
    ``DistributedModule`` (``parts`` None), or the network with its named trainable parts replaced in place
    by ``DistributedModule`` s (for iterations that call those parts rather than the whole network; dotted
    names reach into parts, e.g. ``dec_m.autoencoder``; the composed network's state dict keeps its keys).
    The same module is wrapped once however often asked."""
    if not is_distributed():
        return network
    if not parts:
        return _ddp(network)
    for name in parts:
        *path, leaf = str(name).split(".")
        parent = network
        for p in path:
            parent = getattr(parent, p, None)
        part = getattr(parent, leaf, None)
        if not isinstance(part, torch.nn.Module):
            raise ValueError(f"{type(network).__name__} has no part {name!r} to train in parallel")
        wrapped = _ddp(part)
        if wrapped is not part:
            setattr(parent, leaf, wrapped)
            wrapped._register_load_state_dict_pre_hook(_nested_load_hook)
    return network


def sampler(dataset, shuffle: bool = True, seed: int = 0):
    """Each rank's share of ``dataset`` (MONAI ``DistributedSampler``; None in a single process: then the
    data loader's own ``shuffle`` applies)."""
    if not is_distributed():
        return None
    from monai.data import DistributedSampler

    return DistributedSampler(dataset, shuffle=shuffle, seed=int(seed), even_divisible=True)


def shuffle(value: bool = True) -> bool:
    """The data loader's ``shuffle``: off under torchrun (the ``DistributedSampler`` shuffles)."""
    return bool(value) and not is_distributed()


class _NullWriter:
    """Stands in for TensorBoard's ``SummaryWriter`` on ranks > 0: accepts every call, writes nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def summary_writer(log_dir: str | os.PathLike):
    """TensorBoard writer of rank 0 (``_NullWriter`` elsewhere, so that one run has one event file)."""
    if rank() != 0:
        return _NullWriter()
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir))


class InSyncCheck:
    """Attach to a trainer: at the end of every epoch (and of the run) compare a checksum of
    ``networks``' parameters across ranks and stop with a clear error if they differ (a part trained
    outside ``DistributedDataParallel``). Does nothing in a single process."""

    def __init__(self, networks, rtol: float = 1e-4):
        self.networks = [n for n in (networks if isinstance(networks, (list, tuple)) else [networks]) if n is not None]
        self.rtol = float(rtol)

    def attach(self, engine) -> None:
        from ignite.engine import Events

        if is_distributed():
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def checksum(self) -> torch.Tensor:
        params = [p for n in self.networks for p in n.parameters()]
        return torch.stack([p.detach().double().abs().sum() for p in params]).cpu() if params else torch.zeros(1)

    def __call__(self, engine=None) -> None:
        local = self.checksum()
        dev = device() if dist.get_backend() == "nccl" else torch.device("cpu")
        gathered = [torch.zeros_like(local, device=dev) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, local.to(dev))
        ref = gathered[0].cpu()
        for r, other in enumerate(gathered[1:], start=1):
            if not torch.allclose(other.cpu(), ref, rtol=self.rtol, atol=1e-8):
                bad = int((~torch.isclose(other.cpu(), ref, rtol=self.rtol, atol=1e-8)).nonzero()[0])
                raise RuntimeError(f"rank {r}'s weights differ from rank 0's (parameter tensor {bad}): a trained part "
                                   "ran outside DistributedDataParallel; list it in ddp_parts")
        logging.getLogger("distributed").debug("ranks in sync")

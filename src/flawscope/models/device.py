"""Where a supervised model trains: how many CPU threads, or a CUDA GPU.

Torch runs on one thread when the machine is busier than its cores (os.getloadavg): on a shared
two-core machine two torch threads ran 11x slower than one (their OpenMP workers wait on each
other while other processes hold the cores).

With ``device="cuda"`` (or ``"cuda:N"``) the frozen trunk's pass over the training images (the
feature bank) and the trained heads' optimisation run on that GPU. The rest stays on the CPU,
where it is cheap or where the deployed station runs: the anomaly head's statistics, the
temperature, the choice of the image score, the export and every prediction. The fitted model's
tensors are on the CPU either way, so its bundle is the same kind of bundle; a GPU's arithmetic
differs from the CPU's in the last bits, so the heads it trains are close to, not equal to, the
CPU's (the training choices, the sampled batches and the initial weights are the same).

Fine-tuning the trunk and the box head train on the CPU only; a GPU is refused for them rather
than silently ignored.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from flawscope.errors import InputError

CPU = "cpu"


def choose_threads(requested: int | None) -> int:
    """Torch threads for training: as asked, else 1 when the load exceeds the cores."""
    if requested is not None:
        return max(1, int(requested))
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0] > cores
    except OSError:
        busy = False
    return 1 if busy else cores


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """Float32 arithmetic on a GPU: no TF32 in convolutions or matrix products, then as it was.

    TF32 keeps 10 bits of the mantissa. The trunk's features and the heads' training then differ
    from the CPU's (and from the exported graph's) by about 1e-3 instead of float32's last bits.
    """
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def check_device(value: Any) -> None:
    """Refuse a ``device`` that is not ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (no GPU is looked for here).

    Raises:
        InputError: naming ``device``.
    """
    ok = isinstance(value, str) and (
        value in (CPU, "cuda") or (value.startswith("cuda:") and value[5:].isdigit())
    )
    if not ok:
        raise InputError("device", f"must be 'cpu', 'cuda' or 'cuda:N', got {value!r}")


def training_device(value: str) -> torch.device:
    """The torch device to train on, checked to exist on this machine.

    Raises:
        InputError: naming ``device`` when a GPU is asked for and torch sees none (or not that one).
    """
    check_device(value)
    if value == CPU:
        return torch.device(CPU)
    if not torch.cuda.is_available():
        raise InputError(
            "device",
            f"{value!r} asked for, but torch sees no CUDA GPU on this machine (torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}); train with device='cpu'",
        )
    index = int(value[5:]) if ":" in value else 0
    if index >= torch.cuda.device_count():
        raise InputError("device", f"{value!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return torch.device(value)


def device_runner(module: nn.Module, device: torch.device) -> Callable[[np.ndarray], torch.Tensor]:
    """``(B, 3, H, W) float32 -> (B, C, h, w)`` CPU features, the module run on ``device``.

    The module is copied to the device, so the model's own trunk stays on the CPU (its export
    and predictions read it there).
    """
    on_device = copy.deepcopy(module).to(device).eval()

    def run(batch: np.ndarray) -> torch.Tensor:
        with torch.inference_mode(), full_precision():
            out: torch.Tensor = on_device(torch.from_numpy(batch).to(device))
            return out.float().cpu()

    return run

"""Where and how training computes: the device, memory layout, matmul precision and thread count."""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import Config
from .errors import UserError


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def pick_device(name: str) -> torch.device:
    """auto (cuda, then mps, then cpu) or a named device, refused in one line when this machine lacks it."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    hint = "use auto or cpu (--device cpu, or --set train.device=cpu for training)"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; choose auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name} asked for, but no CUDA device is available here; {hint}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device {name} asked for, but this machine has {torch.cuda.device_count()} CUDA "
                            f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not _mps_available():
        raise UserError(f"device mps asked for, but MPS is not available here; {hint}")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"device {name!r} is not supported; choose auto, cpu, cuda, cuda:N or mps")
    return device


def has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d | nn.ConvTranspose2d) for m in module.modules())

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # train.amp -> autocast dtype


def use_channels_last(cfg: Config, device: torch.device) -> bool:
    """channels_last unless compiling for CUDA, where inductor picks conv layouts itself and channels_last
    weights fail its stride check in the transposed conv's backward (torch 2.11, H100)."""
    return cfg.train.channels_last and not (cfg.train.compile and device.type == "cuda")


@contextlib.contextmanager
def threads_restored() -> Any:
    """torch's CPU thread count as it was before the block, whatever the block set (train.threads)."""
    before = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextlib.contextmanager
def matmul_precision(setting: str) -> Any:
    """float32 matmul precision inside the block (each training step), restored after. "high" allows TF32 on CUDA
    (float32 on a CPU); "medium" runs float32 matmuls in bfloat16 with float32 accumulation, on CUDA and
    on CPUs whose oneDNN has a fast bfloat16 path (AMX), keeping weights, activations and Adam in float32;
    "highest" is exact float32 everywhere."""
    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    torch.set_float32_matmul_precision(setting)
    torch.backends.cudnn.allow_tf32 = setting != "highest"  # convolutions on CUDA
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


CUBLAS_DETERMINISTIC = ":4096:8"  # the cuBLAS workspace setting that makes its matmuls repeatable


def prepare_deterministic(enabled: bool) -> None:
    """Before any CUDA work: cuBLAS reads its workspace setting when its first handle is made."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)


@contextlib.contextmanager
def training_kernels(deterministic: bool, device: torch.device) -> Iterator[None]:
    """Inside the block (the training loop), the kernels the run asks for, and the caller's choice back after
    it: under train.deterministic, torch's deterministic kernels and no cuDNN autotuning (an op with no
    deterministic kernel on the device warns once rather than stopping the run); otherwise, on CUDA, cuDNN's
    autotuned kernels (faster, not repeatable)."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    try:
        if deterministic:
            prepare_deterministic(True)
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2], before[3]


def cpu_has_bf16_matmul() -> bool:
    """Whether oneDNN can run bfloat16 matmuls on this CPU (what train.matmul_precision=medium uses)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.cache
def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU's model name, with the matrix units that set its bfloat16 speed: "Intel Xeon Processor (AMX)",
    "AMD EPYC 9R14 96-Core Processor (AVX512_BF16)". CPUs with the same kernel set (AVX512) differ in speed,
    most in bfloat16, and in how their kernels round (one run's fd_digits 2.517 on an EPYC, 2.637 on a Xeon),
    so compare and a resume tell them apart by this. None where the OS does not say."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    if model is None:
        return None
    name = re.sub(r"\((R|TM|tm)\)", "", model.group(1))
    name = " ".join(re.sub(r"\bCPU\b|@.*$", "", name).split())
    unit = _matrix_unit(text)
    return f"{name} ({unit})" if unit else name


def _matrix_unit(cpuinfo_text: str) -> str | None:
    """The fastest bfloat16 matmul unit that /proc/cpuinfo's flags name: "AMX", "AVX512_BF16" or None."""
    flags = re.search(r"^flags\s*:\s*(.+)$", cpuinfo_text, re.MULTILINE)
    flags = set(flags.group(1).split()) if flags else set()
    return "AMX" if "amx_tile" in flags else "AVX512_BF16" if "avx512_bf16" in flags else None


@functools.cache
def cpu_matrix_unit(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """This CPU's bfloat16 matmul unit ("AMX", "AVX512_BF16"), None where it has neither or the OS does not say."""
    try:
        return _matrix_unit(cpuinfo.read_text(errors="replace"))
    except OSError:
        return None


# What bf16 bought the default preset on each kind of CPU (its 40.5 kimg of 2026-12-06), at about the same
# fd_digits (README)
BF16_SPEEDUP = {"AMX": 1.44, "AVX512_BF16": 1.41}


def bf16_note(cfg: Config, device: torch.device, nets: tuple[nn.Module, ...]) -> str | None:
    """The note for a float32 run on a CPU with a bfloat16 matrix unit (AMX, AVX512_BF16) whose nets (G, D) have
    convolutions, which bf16 was measured to train much faster there."""
    unit = cpu_matrix_unit()
    if (device.type != "cpu" or cfg.train.amp != "none" or unit not in BF16_SPEEDUP
            or not any(has_conv(net) for net in nets)):
        return None
    return (f"this CPU has {unit}: --set train.amp=bf16 trained the default preset "
            f"{BF16_SPEEDUP[unit]:.2f}x faster to about the same fd_digits (see the README's Choosing the default)")


def available_memory() -> int | None:
    """Bytes the OS can give a new allocation (Linux's MemAvailable); None where it does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(needed: int, what: str, cure: str) -> None:
    """Refuse work that would hold more than the memory available before starting it: the OS would otherwise
    kill the process part way, with no message."""
    available = available_memory()
    if available is not None and needed > available:
        raise UserError(f"{what} hold {needed / 2**30:,.1f} GiB in memory, and {available / 2**30:,.1f} GiB is "
                        f"available; {cure}")


def available_cpus() -> int:
    """The CPUs this process may run on (a container's or taskset's share, not the whole machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def threads_note(threads: int, processes: int = 1) -> str | None:
    """A note when train.threads asks for more threads than there are CPUs: the extra ones only contend (on a
    2-CPU machine, 3 threads trained the default preset 1.7x slower than 2)."""
    cpus = available_cpus()
    if threads * processes <= cpus:
        return None
    each = f" in each of {processes} processes" if processes > 1 else ""
    fits = max(1, cpus // processes)
    return (f"train.threads={threads}{each} is more threads than the {cpus} CPUs this run may use; the extra "
            f"ones contend for them and slow training down: use train.threads={fits}, or 0 to let torch choose")

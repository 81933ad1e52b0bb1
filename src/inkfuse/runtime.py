"""Process-wide settings that make PyTorch faster on CPU without changing any result."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>
_KEEP = 1 << 30  # bytes


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed blocks of up to 1 GiB for reuse.

    By default glibc serves each allocation over its mmap threshold (a few MiB at most) with a
    fresh mmap, hands it back to the kernel on free and trims the heap top likewise, so every
    training step page-faults its activations in again. Keeping them removes nearly all of those
    faults (counted in benchmarks/README.md); what that saves depends on how costly faults are
    on the machine, and results cannot change. Raising both thresholds is what
    tcmalloc/jemalloc do (`torch.backends.xeon.run_cpu` preloads them), without a preload.
    Returns whether it took effect (False off glibc, e.g. macOS).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs without mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 * _KEEP))


_ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                      "AVX512_CORE_VNNI")


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device_type: str) -> bool:
    """Whether bf16 arithmetic runs in hardware on this device type.

    On a CPU that only PyTorch's emulation serves (AVX2, plain AVX-512 without AVX512_BF16 or
    AMX) a bf16 convolution is many times slower than fp32 (benchmarks/README.md), so `auto`
    precision must not pick it there. CUDA asks the driver; other CPUs read Linux's flags, and
    a CPU whose flags cannot be read counts as having none, and so does one whose vector
    kernels were capped below AVX-512 (ATEN_CPU_CAPABILITY or ONEDNN_MAX_CPU_ISA, as the test
    suite does to make results bit-exact across CPUs): bf16 is emulated there too.
    """
    if device_type == "cuda":
        import torch  # only here: the rest of the core stays torch-free

        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    capped = (os.environ.get("ATEN_CPU_CAPABILITY", "").lower() in ("default", "avx2")
              or os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _ISAS_WITHOUT_BF16)
    return not capped and bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def resolve_precision(precision: str, device_type: str) -> str:
    """`train.precision` as it runs: `auto` is bf16 where `native_bf16`, else fp32."""
    if precision == "auto":
        return "bf16" if native_bf16(device_type) else "fp32"
    return precision

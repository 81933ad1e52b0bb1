"""Process settings: freed memory is reused instead of page-faulted in again; `auto` precision
picks bf16 only on hardware that has it."""

import resource
import sys

import pytest
import torch

from inkfuse import runtime
from inkfuse.runtime import keep_freed_memory


def minor_faults_of_a_fresh_tensor(mib: int = 32) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(mib << 18)  # written and freed: above glibc's largest mmap threshold
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_without_page_faults():
    assert keep_freed_memory()
    assert keep_freed_memory()  # idempotent
    # the first one maps the memory; it is a little larger, because torch's 64-byte aligned
    # allocation asks malloc for a few bytes more than the block it freed
    minor_faults_of_a_fresh_tensor(36)
    assert minor_faults_of_a_fresh_tensor() < 100  # a fresh mapping would fault 8192 pages


@pytest.mark.parametrize(("flags", "expected"), [
    ({"avx2", "fma"}, "fp32"),                      # emulated bf16 is many times slower here
    ({"avx512f", "avx512bw"}, "fp32"),              # AVX-512 without the bf16 instructions
    ({"avx512f", "avx512_bf16"}, "bf16"),
    ({"amx_bf16", "amx_tile"}, "bf16"),
])
def test_auto_precision_picks_bf16_only_where_the_cpu_has_it(monkeypatch, flags, expected) -> None:
    monkeypatch.setattr(runtime, "_cpu_flags", lambda: frozenset(flags))
    for var in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"):  # conftest caps them at AVX2
        monkeypatch.delenv(var, raising=False)
    assert runtime.resolve_precision("auto", "cpu") == expected
    assert runtime.resolve_precision("fp32", "cpu") == "fp32"  # an explicit choice is kept
    assert runtime.resolve_precision("bf16", "cpu") == "bf16"


@pytest.mark.parametrize(("var", "value"), [("ATEN_CPU_CAPABILITY", "avx2"),
                                            ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")])
def test_kernels_capped_below_bf16_count_as_emulated(monkeypatch, var, value) -> None:
    monkeypatch.setattr(runtime, "_cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    for v in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv(var, value)
    assert runtime.resolve_precision("auto", "cpu") == "fp32"


def test_auto_precision_is_a_recipe_value() -> None:
    # imported here: the allocator test above must run before the config package is loaded
    from inkfuse.config import load_recipe
    from inkfuse.errors import ConfigError

    assert load_recipe("shapes", ["train.precision='auto'"]).train.precision == "auto"
    with pytest.raises(ConfigError, match="precision"):
        load_recipe("shapes", ["train.precision='fp16'"])

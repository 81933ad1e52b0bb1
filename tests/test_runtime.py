"""The allocator setting: freed memory is reused instead of page-faulted in again."""

import resource
import sys

import pytest
import torch

from inkfuse.runtime import keep_freed_memory


def minor_faults_of_a_fresh_tensor() -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(8 << 20)  # 32 MiB, written and freed: above glibc's largest mmap threshold
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_without_page_faults():
    assert keep_freed_memory()
    assert keep_freed_memory()  # idempotent
    minor_faults_of_a_fresh_tensor()  # the first one maps the memory
    assert minor_faults_of_a_fresh_tensor() < 100  # a fresh mapping would fault 8192 pages

"""nt_llm.host_memory: with glibc keeping freed memory, a large block freed and made again costs no page faults.

Each case runs in a fresh interpreter: the setting is process-wide and cannot be undone.
"""

import platform
import subprocess
import sys

# Makes and frees a 130 MiB tensor, then makes a 128 MiB one (both above glibc's largest mmap threshold, 32 MiB);
# prints whether the setting applied and the minor page faults of the second tensor. The first is a little
# larger so that its freed block holds the second with its alignment slack wherever the heap put it.
PROBE = """
import resource, sys, torch
from nt_llm.host_memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
torch.ones(130 << 20, dtype=torch.uint8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.ones(128 << 20, dtype=torch.uint8)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def probe(setting: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, setting], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


def test_kept_memory_is_reused_without_page_faults_and_released_memory_is_not() -> None:
    applied, kept = probe("keep")
    assert applied == str(GLIBC)
    if not GLIBC:
        return  # nothing to compare: the setting applies to glibc only, and said it did not apply
    _, released = probe("release")
    # 128 MiB freshly mapped is 32768 faults of 4 KiB pages (64 with transparent huge pages always on).
    assert kept < 16
    assert released >= 64

"""glibc malloc keeps freed tensor memory (segdet.malloc): a block of an activation's size comes from the heap and
stays there when freed, for the next step to reuse, instead of being mmapped and handed back every time.

The allocator's own bookkeeping (mallinfo2) says where each block came from and where it went, which is exact.
Counting the page faults of whole training steps, as this test used to, was not: which freed chunk fits the next
request depends on where the heap and the mmapped chunks start (randomised per process), so the count per step
varied from run to run with either setting (docs/design.md, memory reuse)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from segdet.malloc import user_chose_malloc

MIB = 2**20

# A fresh process (the setting is made once per process and cannot be undone): a block of an activation's size
# (8 MiB, every page written) with glibc's defaults; then, with segdet's setting, a bigger one (glibc's defaults
# raise their mmap threshold to the size of the last block freed, so the same size would prove nothing) and one
# above its 32 MiB mmap threshold.
BLOCKS = """
import ctypes, ctypes.util, json
import torch
from segdet.malloc import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2

def block(mib):
    before = libc.mallinfo2()
    t = torch.ones(mib * 2**20, dtype=torch.uint8)
    alive = libc.mallinfo2()
    del t
    after = libc.mallinfo2()
    return {"mmapped": alive.hblkhd - before.hblkhd, "unmapped": alive.hblkhd - after.hblkhd,
            "kept": after.fordblks - alive.fordblks}

default = block(8)
applied = keep_freed_memory()
print(json.dumps({"default": default, "applied": applied, "kept": block(16), "big": block(40)}))
"""


def blocks() -> dict:
    env = {k: v for k, v in os.environ.items() if not user_chose_malloc({k: v})}
    out = subprocess.run([sys.executable, "-c", BLOCKS], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_a_freed_activation_stays_in_the_heap_instead_of_going_back_to_the_kernel():
    b = blocks()
    # glibc's defaults: the block is an mmap of its own, unmapped when freed (its pages are faulted in again next time)
    assert b["default"]["mmapped"] >= 8 * MIB and b["default"]["unmapped"] >= 8 * MIB, b
    assert b["applied"]
    # segdet's setting: the block comes from the heap and stays there, free for the next step
    assert b["kept"]["mmapped"] == 0 and b["kept"]["kept"] >= 16 * MIB, b
    # above the mmap threshold a block is still mmapped and goes back at once: what a process keeps is bounded
    assert b["big"]["mmapped"] >= 40 * MIB and b["big"]["unmapped"] >= 40 * MIB and b["big"]["kept"] < MIB, b


def test_a_users_own_malloc_choice_is_left_alone():
    assert not user_chose_malloc({"PATH": "/bin", "OMP_NUM_THREADS": "2"})
    assert user_chose_malloc({"MALLOC_ARENA_MAX": "2"}) and user_chose_malloc({"MALLOC_TRIM_THRESHOLD_": "0"})
    assert user_chose_malloc({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"})
    assert not user_chose_malloc({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F"})
    assert user_chose_malloc({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"})


def test_the_segdet_command_makes_the_setting(monkeypatch):
    import segdet.cli as cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(True))
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert calls == [True]

"""glibc malloc keeps freed tensor memory (segdet.malloc): repeated steps stop faulting pages in again."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from segdet.malloc import user_chose_malloc

ACTIVATION_PAGES = 4 * 32 * 128 * 128 * 4 // 4096  # one 8 MiB activation of the step below

STEPS = """
import resource, sys
import torch
from segdet.malloc import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, padding=1),
                          torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 2))
x = torch.randn(4, 3, 128, 128)
faults = []
for _ in range(15):  # the first steps grow the heap to what a step needs: the median leaves them out
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    net(x).sum().backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, sorted(faults)[len(faults) // 2])
"""


def faults_per_step(mode: str) -> tuple[bool, float]:
    env = {k: v for k, v in os.environ.items() if not user_chose_malloc({k: v})}
    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    applied, faults = out.stdout.split()
    return applied == "True", float(faults)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_freed_step_memory_is_reused_without_page_faults():
    applied, kept = faults_per_step("keep")
    _, default = faults_per_step("default")
    assert applied
    assert default >= 0.9 * ACTIVATION_PAGES  # glibc's defaults fault activations in again every step (1-6 of them)
    assert kept < 0.05 * ACTIVATION_PAGES


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

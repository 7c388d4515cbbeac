"""Long runs keep their memory (``make soak``; not part of ``make test``).

Trains the smoke models of both tasks for many epochs, SAM with and without the embedding cache, each as a real
``segdet train`` process, and reads that process's resident memory (VmRSS, plus its DataLoader workers') each time
it logs the end of an epoch. A run passes when its memory grows by less than ``--max-growth`` (5 %) from epoch 3 to
the last: epochs 1-2 fill caches, allocator pools and the first figures, after that memory should stay flat.

    python -m benchmarks.soak                      # the three runs, 40 epochs each (minutes on 2 CPU cores)
    python -m benchmarks.soak --epochs 100 --only sam_cache
    python -m benchmarks.soak data.num_workers=2   # extra overrides go to every run

Prints one line per epoch and a summary table; exits 1 if a run fails or grows too much.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import ROOT

COMMON = ["experiment=smoke", "data.num_images=16", "data.num_workers=0", "trainer.progress=false"]
RUNS = {
    "sam": ["task=sam"],
    "sam_cache": ["task=sam", "model.train_parts=[mask_decoder]", "model.cache_embeddings=true", "augment=none"],
    "frcnn": ["task=frcnn"],
}
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+) step")


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and its children (DataLoader workers), MiB."""
    total = 0
    for p in [pid] + _children(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        total += int(m.group(1)) if m else 0
    return total / 1024


def _children(pid: int) -> list[int]:
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    kids = [int(c) for c in found]
    return kids + [g for k in kids for g in _children(k)]


def soak(name: str, epochs: int, extra: list[str], workdir: Path) -> list[float]:
    """One run; returns its memory at the end of each epoch."""
    args = [*RUNS[name], *COMMON, f"trainer.max_epochs={epochs}", f"hydra.run.dir={workdir / name}", *extra]
    if name == "sam_cache":
        args.append(f"model.cache_dir={workdir / 'cache'}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "segdet", "train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    memory, tail = [], []
    for line in proc.stderr:
        tail = (tail + [line])[-20:]
        m = EPOCH_LINE.match(line)
        if m:
            memory.append(rss_mib(proc.pid))
            print(f"  {name:<10} epoch {int(m.group(1)):>4}/{m.group(2)}  {memory[-1]:8.1f} MiB", flush=True)
    if proc.wait() != 0:
        raise RuntimeError(f"{name}: segdet train failed:\n{''.join(tail)}")
    return memory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--only", default=",".join(RUNS), help=f"comma-separated, of {', '.join(RUNS)}")
    parser.add_argument("--max-growth", type=float, default=5.0, help="percent, epoch 3 to the last")
    parser.add_argument("overrides", nargs="*", help="key=value for every run")
    a = parser.parse_args()
    if a.epochs < 4:
        parser.error("--epochs must be at least 4 (growth is measured from epoch 3)")
    rows, failed = [], False
    with tempfile.TemporaryDirectory(prefix="segdet-soak-") as tmp:
        for name in a.only.split(","):
            memory = soak(name, a.epochs, a.overrides, Path(tmp))
            growth = 100 * (memory[-1] - memory[2]) / memory[2]
            ok = growth < a.max_growth
            failed |= not ok
            rows.append(f"| {name} | {a.epochs} | {memory[0]:.0f} | {memory[2]:.0f} | {max(memory):.0f} | "
                        f"{memory[-1]:.0f} | {growth:+.1f} % | {'ok' if ok else 'GREW'} |")
    print("\n| run | epochs | MiB after epoch 1 | epoch 3 | peak | last | growth 3→last | |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

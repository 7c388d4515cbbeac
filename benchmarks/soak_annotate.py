"""``segdet annotate`` under load (``make soak``, beside ``benchmarks.soak``; not part of ``make test``).

Starts a real ``segdet annotate`` process on generated images, then ``--clients`` concurrent clients (8) click for
``--seconds`` (60): each works on its own images, moves to the next one every few clicks, and now and then commits
an object. The embedding LRU holds fewer images than the clients visit (``memory_items=4``), so the disk cache
behind it is read all along. Reads the server's resident memory (VmRSS) every second.

Passes when no request fails, and the memory grows by less than ``--max-growth`` (5 %) from the end of the warm-up
(``--warmup`` seconds, or the first visit of every image, whichever is later) to the end. Prints p50/p95/p99
latency per request kind and the memory figures; exits 1 on a failure.

    python -m benchmarks.soak_annotate                    # sam_tiny, 8 clients, one minute
    python -m benchmarks.soak_annotate --seconds 300 segmenter=PATH    # extra key=value go to segdet annotate
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.annotate import start as start_server, stop as stop_server
from benchmarks.soak import rss_mib


def make_images(folder: Path, n: int, size: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    for k in range(n):
        pixels = (rng.random((size, size * 3 // 4, 3)) * 120).astype(np.uint8)
        y, x = rng.integers(0, size // 2, 2)
        pixels[y: y + size // 3, x: x + size // 4] = rng.integers(120, 255, 3)
        Image.fromarray(pixels).save(folder / "images" / f"img{k:03d}.png")


def client(url: str, ids: list, sizes: dict, stop: threading.Event, seed: int, record) -> None:
    import httpx

    rng = np.random.default_rng(seed)
    with httpx.Client(timeout=120) as http:
        k = 0
        while not stop.is_set():
            image_id = ids[(k // 5) % len(ids)]
            w, h = sizes[image_id]
            pts = [[float(rng.uniform(0, w - 1)), float(rng.uniform(0, h - 1)), 1 if j == 0 else int(rng.integers(2))]
                   for j in range(int(rng.integers(1, 4)))]
            kind = "segment"
            t0 = time.perf_counter()
            try:
                r = http.post(f"{url}/api/images/{image_id}/segment", json={"points": pts})
                if r.status_code == 200 and k % 5 == 4:
                    kind = "segment+commit"
                    r2 = http.post(f"{url}/api/images/{image_id}/objects",
                                   json={"segmentation": r.json()["masks"][0]})
                    r = r2 if r2.status_code != 422 else r  # an empty mask is refused (422): not a failure
                ok, what = r.status_code == 200, f"{r.status_code} {r.text[:200]}"
            except httpx.HTTPError as e:
                ok, what = False, f"{type(e).__name__}: {e}"
            record(kind, time.perf_counter() - t0, image_id, ok, what)
            k += 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--warmup", type=float, default=15)
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--size", type=int, default=256, help="image height in pixels (width 3/4 of it)")
    p.add_argument("--max-growth", type=float, default=0.05)
    p.add_argument("overrides", nargs="*", help="extra key=value for segdet annotate")
    a = p.parse_args(argv)

    import httpx

    with tempfile.TemporaryDirectory(prefix="segdet-soak-annotate-") as scratch:
        root = Path(scratch) / "data"
        make_images(root, a.images, a.size)
        cmd = [sys.executable, "-m", "segdet", "annotate", f"data.root={root}", "port=0", "memory_items=4",
               f"cache_dir={Path(scratch) / 'cache'}", f"hydra.run.dir={Path(scratch) / 'run'}", *a.overrides]
        try:
            server, url = start_server(cmd)
        except RuntimeError as e:
            print(e, file=sys.stderr)
            return 1
        try:
            images = httpx.get(f"{url}/api/images").json()
            sizes = {im["id"]: (im["width"], im["height"]) for im in images}
            ids = list(sizes)
            lock, records, memory, seen = threading.Lock(), [], [], {}
            start = time.perf_counter()

            def record(kind, seconds, image_id, ok, what):
                with lock:
                    now = time.perf_counter() - start
                    records.append((now, kind, seconds, ok, what))
                    seen.setdefault(image_id, now)

            stop = threading.Event()
            per = max(1, len(ids) // a.clients)
            threads = [threading.Thread(target=client, daemon=True,
                                        args=(url, ids[c * per:] + ids[:c * per], sizes, stop, c, record))
                       for c in range(a.clients)]
            for t in threads:
                t.start()
            while time.perf_counter() - start < a.seconds:
                time.sleep(1)
                memory.append((time.perf_counter() - start, rss_mib(server.pid)))
                if server.poll() is not None:
                    break
            stop.set()
            for t in threads:
                t.join(130)
        finally:
            stop_server(server)

    failures = [r for r in records if not r[3]]
    warm = max(a.warmup, max(seen.values(), default=0.0) if len(seen) == len(ids) else a.warmup)
    after = [mib for t, mib in memory if t >= warm]
    growth = (after[-1] - after[0]) / after[0] if len(after) >= 2 else float("nan")
    print(f"{len(records)} requests from {a.clients} clients in {a.seconds:.0f} s, {len(failures)} failed")
    for kind in sorted({r[1] for r in records}):
        ms = [1000 * r[2] for r in records if r[1] == kind and r[3]]
        if ms:
            print(f"  {kind:<15} n={len(ms):<5} p50 {np.percentile(ms, 50):7.1f} ms  p95 {np.percentile(ms, 95):7.1f} ms"
                  f"  p99 {np.percentile(ms, 99):7.1f} ms")
    if after:
        print(f"  memory (VmRSS): {memory[0][1]:.0f} MiB at 1 s, {after[0]:.0f} MiB after warm-up ({warm:.0f} s), "
              f"{after[-1]:.0f} MiB at the end: {100 * growth:+.1f} % (limit {100 * a.max_growth:.0f} %)")
    for r in failures[:5]:
        print(f"  failed at {r[0]:.1f} s ({r[1]}): {r[4]}", file=sys.stderr)
    if memory and memory[-1][0] < a.seconds - 1:
        print(f"the server died (exit {server.returncode})", file=sys.stderr)
        return 1
    return 1 if failures or not after or not growth < a.max_growth else 0


if __name__ == "__main__":
    sys.exit(main())

"""A stand-in for the segdet command in the QGIS plugin's tests: progress bars drawn by tqdm as segdet draws them
(on a terminal only), a child process, then either a long wait (to be canceled) or segdet's one-line error.

    FAKE_PIDS=FILE python fake_segdet.py predict ... [fail]   # its pid and its child's pid are written to FILE
"""
import os
import subprocess
import sys
import time

from tqdm import tqdm

child = subprocess.Popen(["sleep", "300"])
with open(os.environ["FAKE_PIDS"], "w") as f:
    f.write(f"{os.getpid()} {child.pid}\n")
print("predicting 1 image(s) with fake.pt on cpu (precision 32)", file=sys.stderr, flush=True)
if "fail" in sys.argv:
    child.kill()
    print("segdet: error: http://127.0.0.1:9/scene.tif: not found (HTTP 404)", file=sys.stderr, flush=True)
    sys.exit(2)
outer = tqdm(total=1, desc="predict", unit="img", leave=False, disable=None, dynamic_ncols=True)
inner = tqdm(total=5, desc="scene.tif windows", unit="tile", leave=False, disable=None, dynamic_ncols=True)
for _ in range(2):
    time.sleep(0.2)
    inner.update(1)
inner.refresh()
time.sleep(300)  # until canceled

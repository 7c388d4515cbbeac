"""``python -m segdet ...`` forked from a Python that has already imported torch, torchvision and transformers.

Most of the suite's commands end soon after they start, yet a fresh interpreter spends seconds importing the
libraries before segdet runs a line, and over the suite's many commands that adds up (docs/design.md, "Tests").
So each pytest worker keeps one warm interpreter (this module run as a script) that imports the heavy
third-party libraries once and then forks a child per command, as a DataLoader forks its workers. The child
takes the command's working directory, environment and argv, runs ``segdet`` as ``-m`` does, with its standard
streams in files, and exits with the status a fresh process would have. Nothing of segdet is imported before the
fork, so segdet's own imports and everything after them run in the child as in a fresh process.

What a fresh process shows and a fork does not: warnings the preloaded libraries print while importing, and
environment variables those libraries read at import. A command whose environment differs from the warm
interpreter's in such a variable runs as a fresh process; ``tests/test_cli.py`` runs every command fresh.
"""
from __future__ import annotations

import atexit
import io
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Environment variables that the preloaded libraries (or the interpreter) read at start-up (huggingface_hub
# places its cache from HOME and XDG_CACHE_HOME when imported)
IMPORT_TIME_ENV = ("PYTHON", "HF_", "HUGGINGFACE", "TRANSFORMERS", "TORCH", "PYTORCH", "OMP_", "MKL_", "CUDA",
                   "KMP_", "MPL", "ALBUMENTATIONS", "NO_ALBUMENTATIONS", "OPENCV", "MALLOC_", "LD_", "HOME", "XDG_")


def _import_time_env(env: dict) -> dict:
    return {k: v for k, v in env.items() if k.startswith(IMPORT_TIME_ENV)}


# ---- the warm interpreter ----------------------------------------------------------------------------------------

def _preload() -> None:
    import matplotlib
    matplotlib.use("Agg")
    import albumentations  # noqa: F401
    import hydra  # noqa: F401
    import matplotlib.pyplot  # noqa: F401
    import monai.losses  # noqa: F401
    import torch  # noqa: F401
    import torchvision  # noqa: F401
    from transformers import SamModel, SamProcessor  # noqa: F401


def _child(request: dict, protocol) -> None:
    """Become ``python -m segdet ARGS`` in the request's directory and environment; never returns."""
    code = 1
    try:
        protocol.close()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY | os.O_TRUNC),
                                (2, request["stderr"], os.O_WRONLY | os.O_TRUNC)):
            opened = os.open(path, flags)
            os.dup2(opened, fd)
            os.close(opened)
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True,
                                      errors="backslashreplace")
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.path[0] = os.getcwd()  # -m puts the working directory first
        sys.argv = ["-m", *request["args"]]
        import runpy
        try:
            runpy.run_module("segdet", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:  # what the interpreter makes of sys.exit(...)
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code & 0xFF)


def serve() -> None:
    """Read one JSON request a line; answer the child's pid, then its exit status (``-N``: killed by signal N)."""
    out = os.fdopen(os.dup(1), "w")  # the answers; what the libraries print goes to stderr
    os.dup2(2, 1)
    _preload()
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, out)
        out.write(json.dumps({"pid": pid}) + "\n")
        out.flush()
        _, status = os.waitpid(pid, 0)
        out.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
        out.flush()


# ---- the test side ---------------------------------------------------------------------------------------------

class _Warm:
    def __init__(self, env: dict):
        self.env = dict(env)
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__))], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, cwd=ROOT, env=self.env)
        self.buffer = b""
        self.lock = threading.Lock()

    def _line(self, timeout: float | None) -> dict | None:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            if not select.select([fd], [], [], timeout)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"the warm interpreter ended (exit {self.proc.wait()})")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def run(self, args: list[str], cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
        with self.lock, tempfile.TemporaryDirectory() as tmp:
            stdout, stderr = Path(tmp) / "stdout", Path(tmp) / "stderr"
            stdout.touch()
            stderr.touch()
            request = {"args": args, "cwd": str(cwd), "env": env, "stdout": str(stdout), "stderr": str(stderr)}
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
            # the first request waits for the interpreter's imports too (minutes on a loaded machine)
            pid = self._line(max(timeout, 300))["pid"]
            answer = self._line(timeout)
            if answer is None:
                os.kill(pid, signal.SIGKILL)
                self._line(None)
                raise subprocess.TimeoutExpired([sys.executable, "-m", "segdet", *args], timeout,
                                                stdout.read_text(errors="replace"), stderr.read_text(errors="replace"))
            return subprocess.CompletedProcess([sys.executable, "-m", "segdet", *args], answer["returncode"],
                                               stdout.read_text(errors="replace"), stderr.read_text(errors="replace"))


_warm: _Warm | None = None


def segdet(args: list[str], cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """``subprocess.run([python, -m, segdet, *args], capture_output=True, text=True, ...)``, forked warm where it
    can be."""
    global _warm
    if _warm is None or _warm.proc.poll() is not None:
        _warm = _Warm(env)
    if _import_time_env(env) != _import_time_env(_warm.env):
        return subprocess.run([sys.executable, "-m", "segdet", *args], capture_output=True, text=True, cwd=cwd,
                              timeout=timeout, env=env)
    return _warm.run(args, cwd, env, timeout)


if __name__ == "__main__":
    serve()

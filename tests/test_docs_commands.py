"""Every command in the README's and docs' code blocks runs as written.

Each ``segdet ...`` line (also after ``torchrun ... -m`` or ``srun ...``) is dry-run through the CLI's own checks and
composition (``cli._command_line``: the task, the extras, the config groups and keys, as ``segdet`` itself checks them
before anything runs); a line that sets Hydra's own groups or keys (``hydra/launcher=...``) is also composed by
Hydra (``--cfg hydra``). Sweeps (``-m``, ``a=1,2``, ``interval(...)``) are dry-run with the first value of each.
A checkpoint a command names must be one segdet writes: ``outputs/<task>/train/<stamp>/checkpoints/best.pt``, under a
``hydra.run.dir=`` set earlier on the same page (or by the Makefile), or an elided ``.../best.pt`` or a placeholder
(``FRCNN.pt``). ``python -m MODULE`` must import and ``python FILE``, ``bash FILE`` must exist.

The docs' placeholders are kept as the values they are (``DIR``, ``FILE``, ``...``); ``<stamp>`` becomes a stamp,
``[key=value]`` (optional) is given, ``format=hf|onnx`` is each of its choices, and a bare ``...`` stands for the
previous command's arguments (``segdet train ... prompt.iterations=4`` after the full command).
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

from segdet import cli, hydra_app, overrides
from segdet.engine import session
from segdet.errors import SegdetError
from segdet.tasks import TASKS, get_task_class

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELLS = ("", "sh", "bash", "shell", "console")
STAMP = "2026-01-01_12-00-00"
CHECKPOINT_KEYS = ("ckpt", "detector", "segmenter")


@dataclass
class Line:
    page: str
    number: int
    words: list[str]

    @property
    def id(self) -> str:
        return f"{self.page}:{self.number}"


def code_lines(page: Path) -> list[Line]:
    """The shell lines of the page's fenced code blocks, continuations joined, comments dropped."""
    out, fence, start, held = [], None, 0, ""
    for number, text in enumerate(page.read_text().splitlines(), 1):
        stripped = text.strip()
        if stripped.startswith("```"):
            fence = stripped[3:].strip() if fence is None else None
            continue
        if fence is None or fence not in SHELLS:
            continue
        if not held:
            start = number
        held += text.rstrip()
        if held.endswith("\\"):
            held = held[:-1] + " "
            continue
        try:
            words = shlex.split(held, comments=True)
        except ValueError:  # not a shell line (a heredoc's Python, a diagram)
            words = []
        if words:
            out.append(Line(str(page.relative_to(ROOT)), start, words))
        held = ""
    return out


def segdet_words(words: list[str]) -> list[str] | None:
    """The words after ``segdet`` in a line that runs it, else None."""
    if words[0] == "segdet":
        return words[1:]
    if words[0] == "torchrun" and "-m" in words and words[words.index("-m") + 1: words.index("-m") + 2] == ["segdet"]:
        return words[words.index("-m") + 2:]
    if words[0] == "srun" and "segdet" in words:
        return words[words.index("segdet") + 1:]
    return None


def run_dirs_made_by_make() -> set[str]:
    return set(re.findall(r"hydra\.run\.dir=(\S+)", (ROOT / "Makefile").read_text()))


def doc_commands() -> list[tuple[Line, list[str], set[str]]]:
    """(line, segdet's words with the docs' shorthands filled in, the run dirs named before it on its page)."""
    found = []
    for page in PAGES:
        run_dirs, previous = run_dirs_made_by_make(), {}
        for line in code_lines(page):
            words = segdet_words(line.words)
            if not words:
                continue
            command, args = words[0], words[1:]
            if "..." in args:  # the previous command's arguments, with this line's changes
                given = {a.split("=", 1)[0] for a in args if "=" in a}
                earlier = [a for a in previous.get(command, []) if a.split("=", 1)[0] not in given]
                at = args.index("...")
                args = args[:at] + earlier + args[at + 1:]
            args = [a[1:-1] if re.fullmatch(r"\[\w[\w.]*=.*\]", a) else a for a in args]  # [key=value]: optional
            args = [a.replace("<stamp>", STAMP).replace("<timestamp>", STAMP) for a in args]
            found.append((line, [command, *args], set(run_dirs)))
            previous[command] = args
            run_dirs |= {a.split("=", 1)[1].rstrip("/") for a in args if a.startswith("hydra.run.dir=")}
    return found


COMMANDS = doc_commands()


def choices(args: list[str]) -> list[list[str]]:
    """``key=a|b`` (the docs' "one of") as one command line per choice."""
    lines = [[]]
    for a in args:
        key, _, value = a.partition("=")
        options = value.split("|") if re.fullmatch(r"[\w.\-/]+(\|[\w.\-/]+)+", value) else [value]
        lines = [line + [f"{key}={v}" if _ else a] for line in lines for v in options]
    return lines


def one_job(args: list[str]) -> list[str]:
    """A sweep's first job: ``-m`` dropped and each sweep (``a,b``, ``choice``, ``range``, ``interval``) at its first
    value, read by Hydra's own override parser."""
    out = []
    for a in args:
        if a in ("-m", "--multirun"):
            continue
        if a.startswith("-") or "=" not in a:
            out.append(a)
            continue
        o = OverridesParser.create().parse_override(a)
        v = o.value()
        if isinstance(v, ChoiceSweep):
            first = v.list[0]
        elif isinstance(v, RangeSweep):
            first = v.start
        elif isinstance(v, IntervalSweep):
            first = v.start
        else:
            out.append(a)
            continue
        out.append(f"{a[: len(a) - len(a.lstrip('+~'))]}{o.key_or_group}={first}")
    return out


def touches_hydra(args: list[str]) -> bool:
    """Sets Hydra's own groups or keys beyond the run dir (the CLI's composition leaves those to Hydra)."""
    return any(k.lstrip("+~").startswith(("hydra/", "hydra.")) and not k.startswith("hydra.run.dir")
               for k in (a.split("=", 1)[0] for a in args if "=" in a))


def dry_run(command: str, args: list[str]) -> str | None:
    """None when ``segdet <command> <args>`` passes every check segdet makes before it runs, else what it said."""
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(io.StringIO()):
            final = cli._command_line(command, args)
            if touches_hydra(args):
                hydra_app.launch(command, final + ["--cfg", "hydra"])
    except SystemExit as e:
        if e.code:
            return said.getvalue().strip() or f"exit {e.code}"
    except SegdetError as e:
        return str(e)
    finally:
        session.finish()
    return None


def checkpoint_problem(value: str, run_dirs: set[str]) -> str | None:
    """Why a checkpoint path of the docs is not one segdet writes (None: it is)."""
    if not value.endswith(".pt") or re.fullmatch(r"[A-Z][A-Z0-9_]*\.pt", value):  # a hub id, FRCNN.pt
        return None
    if value.startswith("..."):
        return None if re.search(r"(^|/)(best|last)\.pt$", value) else "an elided path that is not best.pt/last.pt"
    m = re.fullmatch(r"(.+)/checkpoints/(best|last)\.pt", value)
    if m is None:
        return "not <run dir>/checkpoints/best.pt or last.pt"
    run_dir = m.group(1)
    if re.fullmatch(rf"outputs/({'|'.join(TASKS)})/train/{STAMP}", run_dir) or run_dir in run_dirs:
        return None
    return (f"{run_dir}/ is no run dir segdet makes: runs go to outputs/<task>/train/<stamp>/ unless a command "
            "before it on the page sets hydra.run.dir")


@pytest.mark.parametrize("line, words, run_dirs", COMMANDS, ids=[c[0].id for c in COMMANDS])
def test_a_documented_command_composes(line, words, run_dirs, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # a run dir a command names is claimed (and released) here, not in the checkout
    command, args = words[0], words[1:]
    for key in CHECKPOINT_KEYS:
        value = overrides.value(args, key)
        problem = checkpoint_problem(str(value), run_dirs) if value is not None else None
        assert problem is None, f"{line.id}: {key}={value}: {problem}"
    for each in choices(one_job(args)):
        if command in cli.TASK_FROM_CHECKPOINT and overrides.value(each, "task") is None:
            fmt = overrides.value(each, "format")
            errors = {t: dry_run(command, [f"task={t}", *each]) for t in TASKS
                      if fmt in get_task_class(t).export_formats}
            assert errors and None in errors.values(), f"{line.id}: segdet {command} {' '.join(each)}: {errors}"
        else:
            error = dry_run(command, each)
            assert error is None, f"{line.id}: segdet {command} {' '.join(each)}: {error}"


OTHER = [(line, line.words) for page in PAGES for line in code_lines(page)
         if line.words[0] in ("python", "bash", "make") or line.words[0].startswith("OUT=")]


@pytest.mark.parametrize("line, words", OTHER, ids=[o[0].id for o in OTHER])
def test_a_documented_script_exists(line, words):
    words = [w for w in words if not re.fullmatch(r"[A-Z_]+=\S*", w)]  # VAR=value before the command
    if words[0] == "make":
        targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
        assert set(words[1:]) <= targets, f"{line.id}: no make target {sorted(set(words[1:]) - targets)}"
    elif words[1:2] == ["-m"]:
        assert importlib.util.find_spec(words[2].split(".")[0]) is not None and \
            importlib.util.find_spec(words[2]) is not None, f"{line.id}: no module {words[2]}"
    elif words[1:2] != ["-"]:  # python - <<EOF: the script is on the page
        assert (ROOT / words[1]).is_file(), f"{line.id}: no file {words[1]}"


def test_the_pages_have_commands():
    """The extraction itself: the README's commands are found (a page format change must not empty the test)."""
    readme = [c for c in COMMANDS if c[0].page == "README.md"]
    assert len(readme) >= 20 and any(c[1][0] == "export" for c in readme)
    assert any(c[0].page.startswith("docs/") for c in COMMANDS)

"""The command line after ``segdet <command>``, read once with Hydra's own parsers, so segdet sees it as Hydra does.

Hydra's flags (``--cfg job``, ``-m``, ``--info`` ...) are told from overrides by Hydra's own argparse
(``hydra._internal.utils.get_args_parser``), which may be mixed in any order; the overrides by Hydra's override
grammar (``OverridesParser``): quoting (``input='a b,c'``), the ``+``/``++``/``~`` prefixes, packages
(``group@pkg=option``) and sweeps (``a=1,2``, ``choice(...)``, ``interval(...)``). Everything in segdet that
looks at the command line asks here (the task, the checkpoint, the run dir, the sweeper, the keys a user named);
a line Hydra would refuse ends here, on one line, before anything runs.
"""
from __future__ import annotations

import argparse
from functools import lru_cache

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import OverrideParseException

from segdet.errors import SegdetError

HELP_FLAGS = ("help", "hydra_help", "info")  # the flags that print instead of running
MODES = ("run", "multirun", "cfg", "info", "shell_completion")  # Hydra runs in one of these modes at a time


@lru_cache(maxsize=1)
def _overrides_parser() -> OverridesParser:
    return OverridesParser.create()


def _args_parser() -> argparse.ArgumentParser:
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()

    def error(message: str):  # argparse prints its usage and exits; segdet says it on one line
        raise SegdetError(f"{message} (Hydra flags: --help, --cfg job, -m ...)")

    parser.error = error
    return parser


def _own_values(parser: argparse.ArgumentParser, args: tuple[str, ...]) -> list[str]:
    """A flag whose value is optional (``--info [what]``) takes the next word only when it is one of its choices:
    ``--info task=sam`` is ``--info=all task=sam`` (argparse alone would read task=sam as the value)."""
    optional = {flag: action for action in parser._actions if action.nargs == "?" for flag in action.option_strings}
    out = []
    for i, a in enumerate(args):
        action = optional.get(a)
        if action is not None and (i + 1 == len(args) or args[i + 1] not in (action.choices or ())):
            a = f"{a}={action.const}"
        out.append(a)
    return out


@lru_cache(maxsize=64)
def _split(args: tuple[str, ...]) -> tuple[argparse.Namespace, tuple[Override, ...]]:
    parser = _args_parser()
    ns = parser.parse_intermixed_args(_own_values(parser, args))
    modes = [f"--{name.replace('_', '-')}" for name in MODES if getattr(ns, name) not in (None, False)]
    if len(modes) > 1:  # Hydra would say so with a traceback
        raise SegdetError(f"{' and '.join(modes)} cannot be given together: only one of --run, --multirun, --cfg, "
                          "--info, --shell-completion")
    try:
        parsed = tuple(_overrides_parser().parse_overrides(ns.overrides))
    except OverrideParseException as e:  # one line, without the grammar's link
        raise SegdetError(f"cannot read '{e.override}': {e.message.strip().splitlines()[0]} (quote a value that "
                          "holds = , ( ) [ ] { } or spaces: key='...')") from None
    return ns, parsed


def parse(args: list[str]) -> list[Override]:
    """The overrides among ``args`` (Hydra's flags left out), as Hydra parses them."""
    return list(_split(tuple(args))[1])


def flags(args: list[str]) -> list[str]:
    """Hydra's flags among ``args``, each as one token (``--cfg=job``, ``--info=all``), from Hydra's argparse."""
    ns = _split(tuple(args))[0]
    out = []
    for action in _args_parser()._actions:
        value = getattr(ns, action.dest, None)
        if not action.option_strings or value is None or value == action.default:
            continue
        out.append(action.option_strings[0] if action.nargs == 0 else f"{action.option_strings[0]}={value}")
    return out


def overrides(args: list[str]) -> list[str]:
    """The overrides among ``args``, as the user wrote them."""
    return [o.input_line for o in parse(args)]


def flags_first(args: list[str]) -> list[str]:
    """``args`` as Hydra's ``@hydra.main`` takes them: its flags first (``task=sam -m a=1,2`` → ``-m task=sam
    a=1,2``); a flag that takes an optional value never swallows the override after it (``--info task=sam``)."""
    return flags(args) + overrides(args)


def has_flag(args: list[str], *names: str) -> bool:
    """Whether a Hydra flag is given, by its argparse name (``help``, ``multirun``, ``cfg`` ...); any flag when
    no name is given."""
    if not names:
        return bool(flags(args))
    ns = _split(tuple(args))[0]
    return any(getattr(ns, name, None) not in (None, False) for name in names)


def asks_help(args: list[str]) -> bool:
    return has_flag(args, *HELP_FLAGS)


def _text(value) -> str | None:
    return None if value is None else str(value)


def find(args: list[str], key: str) -> Override | None:
    """The last override of ``key`` (a config key or a group, as written without its ``+``/``~`` prefix)."""
    hits = [o for o in parse(args) if o.key_or_group == key and not o.package]
    return hits[-1] if hits else None


def value(args: list[str], key: str) -> str | None:
    """The value the command line gives ``key`` (``value(args, "ckpt")``), or None: not given, deleted, or a
    sweep (whose values are ``options``)."""
    o = find(args, key)
    if o is None or o.is_delete() or o.is_sweep_override():
        return None
    return _text(o.value())


def options(args: list[str], key: str) -> list[str]:
    """Every value ``key`` takes on this command line: one, or each of a sweep's choices (``a=x,y``,
    ``choice(x, y)``); none for a range, which names no option."""
    o = find(args, key)
    if o is None or o.is_delete():
        return []
    if o.is_discrete_sweep():
        return list(o.sweep_string_iterator())
    return [] if o.is_sweep_override() else [_text(o.value())]


def named(args: list[str]) -> set[str]:
    """The keys and groups the overrides name (``+a.b=1`` → ``a.b``; ``group@pkg=x`` → ``group``)."""
    return {o.key_or_group for o in parse(args)}


def without_hydra(args: list[str]) -> list[str]:
    """The overrides of the job's config: Hydra's flags and its own ``hydra.*`` overrides left out (what
    ``compose`` takes)."""
    return [o.input_line for o in parse(args) if not o.is_hydra_override()]


def with_default(args: list[str], key: str, default: str) -> list[str]:
    """``args`` with ``key=default`` in front when the command line does not give ``key``."""
    return list(args) if find(args, key) is not None else [f"{key}={default}", *args]


def added(args: list[str], under: str) -> list[str]:
    """Plain overrides of keys under ``under.`` become additions (``model.x=1`` → ``+model.x=1``): for keys the
    command's own config does not hold. Flags and every other override stay as written."""
    changed = {o.input_line for o in parse(args)
               if o.type == OverrideType.CHANGE and o.key_or_group.startswith(f"{under}.") and not o.package}
    return [f"+{a}" if a in changed else a for a in args]


def renamed(args: list[str], key: str, new_key: str) -> list[str]:
    """``key=value`` written as ``new_key=value`` (its prefix and value as written): an old spelling of a key."""
    out = []
    for a in args:
        o = next((o for o in parse(args) if o.input_line == a), None)
        if o is not None and o.key_or_group == key and not o.package:
            prefix = a[:len(a) - len(a.lstrip("+~"))]
            a = f"{prefix}{new_key}{a[len(prefix) + len(key):]}"
        out.append(a)
    return out

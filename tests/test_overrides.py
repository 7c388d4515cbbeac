"""segdet.overrides reads the command line as Hydra does: each answer is checked against Hydra's own parsers
(OverridesParser, Hydra's argparse) or against the config Hydra composes from the same line."""
from __future__ import annotations

import pytest
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser

from segdet import overrides
from segdet.errors import SegdetError
from tests.conftest import compose_cfg

LINE = ["task='sam'", "-m", "+model.extra=1", "++optim.lr=0.5", "~seed", "data.root='/x/a,b c'",
        "optim.weight_decay=0,0.1", "trainer.precision=choice(32, 8)", "optim.momentum=interval(0.1, 0.9)",
        "hydra.run.dir=/tmp/run", "hydra/sweeper=optuna", "hydra/sweeper_settings@hydra.sweeper=optuna"]


def test_values_are_hydras():
    hydra = {o.key_or_group: o for o in OverridesParser.create().parse_overrides(
        [a for a in LINE if not a.startswith("-")])}
    assert overrides.value(LINE, "task") == "sam" == hydra["task"].value()                      # quotes dropped
    assert overrides.value(LINE, "data.root") == "/x/a,b c" == hydra["data.root"].value()       # not a sweep
    assert overrides.value(LINE, "optim.lr") == "0.5" and overrides.value(LINE, "model.extra") == "1"
    assert overrides.value(LINE, "hydra.run.dir") == "/tmp/run"
    assert overrides.value(LINE, "seed") is None and overrides.value(LINE, "ckpt") is None     # deleted, absent
    assert overrides.value(LINE, "optim.weight_decay") is None                                 # a sweep ...
    assert overrides.options(LINE, "optim.weight_decay") == ["0", "0.1"]                       # ... has options
    assert overrides.options(LINE, "trainer.precision") == ["32", "8"]
    assert overrides.options(LINE, "optim.momentum") == []                                     # a range: none
    assert overrides.options(LINE, "hydra/sweeper") == ["optuna"]
    assert overrides.named(LINE) == set(hydra)


def test_flags_are_told_from_overrides_by_hydras_argparse():
    expected = get_args_parser().parse_args(["-m", *[a for a in LINE if a != "-m"]])
    assert overrides.overrides(LINE) == expected.overrides
    assert overrides.flags(LINE) == ["--multirun"] and overrides.has_flag(LINE, "multirun")
    assert not overrides.asks_help(LINE)
    # the flags go first, as @hydra.main takes them; a flag with an optional value does not take the override
    # after it (Hydra's own parser would read task=sam as --info's value)
    assert overrides.flags_first(["task=sam", "--info", "a=1"]) == ["--info=all", "task=sam", "a=1"]
    assert overrides.flags_first(["task=sam", "--cfg", "job", "-p", "optim"]) == [
        "--cfg=job", "--package=optim", "task=sam"]
    assert overrides.asks_help(["--info"]) and overrides.asks_help(["task=sam", "-h"])


def test_hydras_own_overrides_are_left_out_of_composition():
    assert overrides.without_hydra(LINE) == [a for a in LINE if a != "-m" and not a.startswith("hydra")]


def test_rewrites_keep_the_rest_as_written():
    line = ["task=sam", "model.x=1", "+model.y=2", "++model.z=3", "~model.w", "model=sam_tiny", "--cfg", "job"]
    assert overrides.added(line, "model") == ["task=sam", "+model.x=1", "+model.y=2", "++model.z=3", "~model.w",
                                              "model=sam_tiny", "--cfg", "job"]
    assert overrides.renamed(["input=/a b", "+input='x'", "inputs=1"], "input", "input.path") == [
        "input.path=/a b", "+input.path='x'", "inputs=1"]
    assert overrides.with_default(["a=1"], "task", "sam") == ["task=sam", "a=1"]
    assert overrides.with_default(["task=frcnn"], "task", "sam") == ["task=frcnn"]


def test_the_merged_config_takes_every_kind_of_override():
    cfg = compose_cfg("train", overrides.without_hydra(
        ["task='frcnn'", "experiment=smoke", "+extra.note='a, b'", "++optim.lr=0.25", "~seed"]))
    assert cfg.task.name == "frcnn" and cfg.extra.note == "a, b" and cfg.optim.lr == 0.25 and "seed" not in cfg


@pytest.mark.parametrize("line, words", [
    (["a=b=("], "cannot read 'a=b=(': "),
    (["task=sam", "--bogus"], "unrecognized arguments: --bogus"),
    (["--cfg", "nothing"], "argument --cfg/-c: invalid choice: 'nothing'"),
    (["-m", "--cfg", "job"], "--multirun and --cfg cannot be given together"),
])
def test_a_line_hydra_refuses_is_one_line(line, words):
    with pytest.raises(SegdetError) as e:
        overrides.parse(line)
    assert words in str(e.value) and "\n" not in str(e.value)

"""Slurm and submitit describe a job's tasks, not the rendezvous: segdet derives torch's env:// variables from them
(segdet/engine/cluster.py) and trains with DDP across the tasks, as it does under torchrun."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

from segdet.engine.cluster import expand_nodelist, launched_distributed, torch_env


@pytest.mark.parametrize("nodelist, hosts", [
    ("gpu[001-003,010],cpu7", ["gpu001", "gpu002", "gpu003", "gpu010", "cpu7"]),
    ("n[8-10]", ["n8", "n9", "n10"]),
    ("c[1-2]-ib", ["c1-ib", "c2-ib"]),
    ("node17", ["node17"]),
])
def test_node_lists_expand_like_scontrol(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


def test_two_nodes_of_two_tasks():
    env = {"SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_NTASKS": "4",
           "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_JOB_NODELIST": "gpu[07-09]",
           "SLURM_STEP_TASKS_PER_NODE": "2(x2)", "SLURM_JOB_ID": "4242"}
    assert torch_env(env) == {"MASTER_ADDR": "gpu07", "MASTER_PORT": "24242", "RANK": "3", "WORLD_SIZE": "4",
                              "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    # every task of the step computes the same rendezvous
    assert torch_env({**env, "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"})["MASTER_ADDR"] == "gpu07"
    assert torch_env({**env, "MASTER_PORT": "1234"})["MASTER_PORT"] == "1234"  # an explicit port wins


def test_submitit_local_tasks_and_torchrun():
    local = {"SUBMITIT_LOCAL_GLOBALID": "1", "SUBMITIT_LOCAL_LOCALID": "1", "SUBMITIT_LOCAL_NTASKS": "2",
             "SUBMITIT_LOCAL_JOB_ID": "31337"}
    assert torch_env(local) == {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "51337", "RANK": "1", "WORLD_SIZE": "2",
                                "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    torchrun = {"RANK": "0", "WORLD_SIZE": "8", "LOCAL_RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "29500"}
    # torchrun started inside a Slurm allocation: its own variables win
    assert torch_env({**torchrun, "SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "2"}) == torchrun


@pytest.mark.parametrize("env", [
    {},
    {"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_STEP_NUM_TASKS": "1", "SLURM_JOB_NODELIST": "n1"},
    {"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_JOB_NODELIST": "n[1-2]"},  # a batch script, without srun
    {"SUBMITIT_LOCAL_GLOBALID": "0", "SUBMITIT_LOCAL_NTASKS": "1"},
    {"RANK": "0", "WORLD_SIZE": "1"},
])
def test_one_process_is_not_distributed(env, monkeypatch):
    assert torch_env(env) == {}
    monkeypatch.setattr(os, "environ", dict(env))
    assert not launched_distributed()


# each task saves the weights it ended with (only rank 0 writes the run dir), then runs the real CLI
_TASK = """
import sys, torch
from segdet.engine import distributed, trainer

fit = trainer.Trainer.fit
def fit_and_save(self):
    out = fit(self)
    torch.save({"world": distributed.world_size(), "weights": self.raw_model.state_dict()},
               f"weights.rank{distributed.rank()}.pt")
    return out
trainer.Trainer.fit = fit_and_save
from segdet.cli import main
main(sys.argv[1:])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_slurm_tasks_train_one_model_in_one_run_dir(tmp_path):
    """Two processes with the environment srun gives the tasks of a 2-task step on one node train the smoke model
    under DDP (gloo): same weights on both ranks, as in the checkpoint, and one run dir."""
    job_id = _free_port() - 20000  # the master port is derived from the job id
    if job_id < 0:
        pytest.skip("no free port above 20000")
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("SLURM_", "SUBMITIT_")) and k not in ("RANK", "WORLD_SIZE", "MASTER_PORT")}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([root, base.get("PYTHONPATH", "")]),
                SLURM_JOB_ID=str(job_id), SLURM_NTASKS="2", SLURM_STEP_NUM_TASKS="2",
                SLURM_JOB_NODELIST="localhost", SLURM_STEP_NODELIST="localhost", SLURM_STEP_TASKS_PER_NODE="2",
                SLURM_NODEID="0")
    args = ["train", "task=sam", "experiment=smoke", "trainer.device=cpu", "trainer.max_epochs=1"]
    procs = [subprocess.Popen([sys.executable, "-c", _TASK, *args], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env={**base, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)}) for r in (0, 1)]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    run_dirs = list((tmp_path / "outputs" / "sam" / "train").iterdir())
    assert len(run_dirs) == 1, run_dirs  # rank 0 chose the timestamp; rank 1 followed
    r0, r1 = (torch.load(tmp_path / f"weights.rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    for k, v in r0["weights"].items():
        assert torch.equal(v, r1["weights"][k]), k
    last = torch.load(run_dirs[0] / "checkpoints" / "last.pt", weights_only=False, map_location="cpu")
    saved = last["model"]
    assert all(torch.equal(v, saved[k]) for k, v in r0["weights"].items())

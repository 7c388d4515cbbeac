"""How this process was launched, read from the environment and nowhere else (no torch import: the CLI asks).

torchrun's variables (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` ...) when set, else a Slurm job step's (``srun``,
which Hydra's submitit launcher uses too), else submitit's local executor's. Slurm and submitit describe
the tasks, not the rendezvous, so the first host of the step's node list is the master and the port comes from
the job id: every task computes the same, and two jobs sharing a node get different ports.
"""
from __future__ import annotations

import os
import re
from typing import Mapping

PORT_BASE, PORT_SPAN = 20000, 40000  # master ports 20000..59999: above the usual services, below the ephemeral range


def expand_nodelist(nodelist: str) -> list[str]:
    """Slurm's compressed host list, as ``scontrol show hostnames`` prints it: ``gpu[01-02,7],cpu1`` →
    ``gpu01, gpu02, gpu7, cpu1`` (zero padding kept; one bracket group per host name)."""
    hosts: list[str] = []
    for m in re.finditer(r"([^,\[]+)(?:\[([^\]]+)\])?([^,]*)", nodelist):
        prefix, ranges, suffix = m.groups()
        if ranges is None:
            hosts.append(prefix + suffix)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            hosts.extend(f"{prefix}{i:0{len(lo)}d}{suffix}" for i in range(int(lo), int(hi or lo) + 1))
    return hosts


def _tasks_per_node(spec: str) -> list[int]:
    """``2(x3),1`` → [2, 2, 2, 1] (the format of SLURM_STEP_TASKS_PER_NODE)."""
    out: list[int] = []
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if m:
            out.extend([int(m.group(1))] * int(m.group(2) or 1))
    return out


def _port(job_id: str) -> str:
    return str(PORT_BASE + int(re.sub(r"\D", "", job_id) or 0) % PORT_SPAN)


def torch_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """torch's ``env://`` variables for this process: torchrun's as they are, else those a multi-task Slurm step
    or a multi-task submitit local job implies; ``{}`` for a single process."""
    env = os.environ if env is None else env
    names = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun (also inside a Slurm allocation): it wins
        return {k: env[k] for k in names if k in env} if int(env["WORLD_SIZE"]) > 1 else {}
    if "SLURM_PROCID" in env:
        # the step's tasks, which srun sets; a batch script's own process (no srun) is one process whatever the
        # allocation's SLURM_NTASKS, so that it does not wait for tasks nobody started
        world = int(env.get("SLURM_STEP_NUM_TASKS") or 1)
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST", "")
        hosts = expand_nodelist(nodelist) or ["127.0.0.1"]
        node = int(env.get("SLURM_NODEID", 0))
        per_node = _tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or "")
        local_world = per_node[node] if node < len(per_node) else max(1, world // len(hosts))
        rank, local, job = env["SLURM_PROCID"], env.get("SLURM_LOCALID", "0"), env.get("SLURM_JOB_ID", "0")
    elif "SUBMITIT_LOCAL_GLOBALID" in env:
        world = local_world = int(env.get("SUBMITIT_LOCAL_NTASKS") or 1)
        hosts = ["127.0.0.1"]
        rank, local, job = env["SUBMITIT_LOCAL_GLOBALID"], env.get("SUBMITIT_LOCAL_LOCALID", "0"), \
            env.get("SUBMITIT_LOCAL_JOB_ID", "0")
    else:
        return {}
    if world <= 1:
        return {}
    return {"MASTER_ADDR": env.get("MASTER_ADDR") or hosts[0], "MASTER_PORT": env.get("MASTER_PORT") or _port(job),
            "RANK": rank, "WORLD_SIZE": str(world), "LOCAL_RANK": local, "LOCAL_WORLD_SIZE": str(local_world)}


def launched_distributed() -> bool:
    """Started as one of several processes (torchrun, srun, submitit with several tasks)."""
    return bool(torch_env())


def env_rank() -> int:
    """This process's rank as the launcher gave it, known before the process group exists."""
    return int(torch_env().get("RANK", 0))

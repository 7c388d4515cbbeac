"""Two CPU processes (gloo) train the toy problem under DDP and must end with identical weights."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from segdet.engine import distributed as dist_utils


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist_utils.init_from_env(torch.device("cpu"))
    from pathlib import Path

    from tests.engine.toy import build

    trainer, (train, val) = build(Path(out_dir) / "run", seed=0, max_epochs=2)
    train.sampler.rank = val.sampler.rank = rank
    train.sampler.world = val.sampler.world = world
    metrics = trainer.fit()
    torch.save({"weights": trainer.raw_model.state_dict(), "metrics": metrics, "steps": trainer.step},
               Path(out_dir) / f"rank{rank}.pt")
    dist_utils.cleanup(completed=True)


@pytest.mark.slow
def test_two_ranks_end_with_the_same_weights(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for k, v in r0["weights"].items():
        assert torch.equal(v, r1["weights"][k]), k
    # 32 samples, batch 4, 2 ranks: 4 steps per epoch each
    assert r0["steps"] == r1["steps"] == 8
    # validation metrics are gathered over both ranks, so both see the whole validation set's figure
    assert r0["metrics"]["mse"] == r1["metrics"]["mse"]
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()

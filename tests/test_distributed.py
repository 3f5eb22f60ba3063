"""torchrun-style helpers: a world of one, and two gloo ranks spawned on the CPU."""

from __future__ import annotations

import os
import socket

import numpy as np
import torch
import torch.multiprocessing as mp

from humanliff.config import load_config
from humanliff.data.synth import synthesize_dataset
from humanliff.models.decoder import build_decoder
from humanliff.store import open_store
from humanliff.training import distributed as d
from humanliff.training.fit_a import fit_stage_a


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_world_of_one(monkeypatch):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    info = d.init_distributed("cpu")
    assert info == d.DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    assert not info.distributed and d.is_main() and d.world_size() == 1
    d.barrier()
    assert d.broadcast_object("x") == "x" and d.all_gather_object(3) == [3]
    assert d.all_reduce_sum(torch.ones(2)).tolist() == [1.0, 1.0]
    d.cleanup()


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    info = d.init_distributed("cpu")
    total = d.all_reduce_sum(torch.tensor([float(rank + 1)]))
    shared = d.broadcast_object(f"from-{rank}")
    gathered = d.all_gather_object({"rank": rank})
    d.barrier()
    torch.save({"info": (info.rank, info.world_size, info.distributed, d.is_main()), "total": total.item(),
                "shared": shared, "gathered": gathered}, f"{out}/{rank}.pt")
    d.cleanup()


def test_two_gloo_ranks(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    assert r0["info"] == (0, 2, True, True) and r1["info"] == (1, 2, True, False)
    assert r0["total"] == r1["total"] == 3.0
    assert r0["shared"] == r1["shared"] == "from-0"
    assert r0["gathered"] == r1["gathered"] == [{"rank": 0}, {"rank": 1}]


def _fit_worker(rank: int, port: int, root: str, out: str) -> None:
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = load_config("tiny", [f"data.root={root}", "fit.iterations_a=3", "fit.checkpoint_every=2"])
    fit_stage_a(cfg, out, "cpu")
    d.cleanup()


def test_stage_a_on_two_gloo_ranks(tmp_path):
    root = synthesize_dataset(tmp_path / "data", subjects=3, views=4, resolution=24, seed=1, workers=1)
    out = tmp_path / "run"
    mp.spawn(_fit_worker, args=(_free_port(), str(root), str(out)), nprocs=2, join=True)
    store = open_store(out / "store_a")
    # subjects 0 and 2 were fitted on rank 0, subject 1 on rank 1; all land in one store in order
    assert store.subjects == ["seq_000000", "seq_000001", "seq_000002"]
    planes = np.asarray(store.planes, np.float32)
    assert all(planes[s].std() > 0.05 for s in range(3))
    state = torch.load(out / "checkpoint_a" / "state.pt", weights_only=True)
    assert state["step"] == 3 and len(state["generators"]) == 2
    trained = store.decoder_state()
    torch.manual_seed(0)  # fit.seed: the decoder's initialisation
    untrained = build_decoder(load_config("tiny").decoder).state_dict()
    assert trained.keys() == untrained.keys() and any(not trained[k].equal(untrained[k]) for k in trained)
    # the checkpoint is per subject, not per rank: one process resumes it
    cfg = load_config("tiny", [f"data.root={root}", "fit.iterations_a=4"])
    fit_stage_a(cfg, out, "cpu")
    assert torch.load(out / "checkpoint_a" / "state.pt", weights_only=True)["step"] == 4

"""Data-parallel calibration over 2 gloo processes equals the 1-process run up to summation order."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import tiny_llama
from prunekit import PruneConfig, prune
from prunekit.oneshot.collective import TorchDistributed

CONFIGS = [
    PruneConfig(method="sparsegpt", sparsity=0.5, blocksize=16, sequential="sublayer", calib_dtype="model"),
    PruneConfig(method="wanda", sparsity=0.6, allocation="owl", calib_dtype="model"),
    PruneConfig(method="sparsegpt", pattern="2:4", blocksize=16, refine="admm", admm_iters=5, calib_dtype="model"),
]


def _calib():
    return torch.randint(0, 256, (6, 32), generator=torch.Generator().manual_seed(5))


def _worker(rank, init, results):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    torch.set_num_threads(1)
    collective = TorchDistributed()
    out = []
    for config in CONFIGS:
        model = tiny_llama()
        result = prune(model, config, collective.split(_calib()), progress=False, collective=collective)
        out.append(({k: v.clone() for k, v in model.state_dict().items()}, dict(result.masks), result.info))
    if rank == 0:
        torch.save(out, results)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    results = tmp_path / "results.pt"
    mp.spawn(_worker, args=(f"file://{tmp_path / 'rendezvous'}", str(results)), nprocs=2)
    runs = torch.load(results)
    for config, (weights, masks, info) in zip(CONFIGS, runs, strict=True):
        model = tiny_llama()
        ref = prune(model, config, _calib(), progress=False)
        assert info["calibration_tokens"] == 6 * 32 and info["processes"]["count"] == 2
        assert info["processes"]["bytes_sent_rank0"] > 0
        agree = [float((masks[n] == ref.masks[n]).float().mean()) for n in ref.masks]
        assert min(agree) > 0.99, (config.method, min(agree))
        for name, t in model.state_dict().items():
            torch.testing.assert_close(weights[name], t, rtol=1e-3, atol=1e-4, msg=f"{config.method} {name}")


RECOVER = PruneConfig(method="wanda", pattern="2:4", calib_dtype="model",
                      recovery={"recover": "block", "recover_epochs": 2, "recover_lr": 1e-3})


def _recover_worker(rank, init, results):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    torch.set_num_threads(1)
    collective = TorchDistributed()
    model = tiny_llama()
    result = prune(model, RECOVER, collective.split(_calib()), progress=False, collective=collective)
    torch.save((model.state_dict(), result.info["recover"]["blocks"]), f"{results}.{rank}")
    dist.destroy_process_group()


@pytest.mark.slow
def test_block_reconstruction_over_two_processes_ends_with_one_model(tmp_path):
    """Gradients averaged over the processes: both end with the same weights, each block's error lowered."""
    results = tmp_path / "results.pt"
    mp.spawn(_recover_worker, args=(f"file://{tmp_path / 'rendezvous'}", str(results)), nprocs=2)
    (first, blocks), (second, _) = (torch.load(f"{results}.{r}") for r in (0, 1))
    for name, t in first.items():
        assert torch.equal(t, second[name]), name
    assert all(b["error_after"] < b["error_before"] and b["steps"] == 2 * 3 for b in blocks)

"""DistributedDataParallel: two CPU processes (gloo, launched by `torchrun --standalone`) stay in sync."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent

WORKER = """
import json, os, sys
from pathlib import Path
import torch
sys.path.insert(0, {tests!r})
from test_train import config, synthetic_bundle
from mobilenets.train import Trainer
from mobilenets.train.distributed import params_in_sync

out = Path({out!r})
threads_before = len(os.listdir("/proc/self/task"))
trainer = Trainer(config(out, batch_size=8, lr=0.05, **{options!r}), synthetic_bundle(), log=print)
threads_training = len(os.listdir("/proc/self/task"))
steps = []
trainer.on_step = lambda t: steps.append(t.global_step)
results = trainer.fit()
rank = trainer.dist.rank
torch.save(trainer.model.state_dict(), out / f"rank{{rank}}.pt")
summary = dict(rank=rank, world=trainer.dist.world_size, backend=trainer.dist.backend, steps=steps,
               in_sync=params_in_sync(trainer.model, trainer.dist), samples=len(trainer.train_sampler),
               test_top1=results["test_top1"], stopped_by=results["stopped_by"],
               lr=trainer.optimizer.param_groups[0]["lr"])
trainer.close()  # as mobilenets.train.train does after a completed run
summary.update(threads_before=threads_before, threads_training=threads_training,
               threads_after=len(os.listdir("/proc/self/task")))
(out / f"rank{{rank}}.json").write_text(json.dumps(summary))
"""


def _run_two_ranks(tmp_path: Path, **options) -> tuple[subprocess.CompletedProcess, Path, list[dict]]:
    script = tmp_path / "worker.py"
    out = tmp_path / "run"
    script.write_text(WORKER.format(tests=str(TESTS), out=str(out), options=options))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # --standalone: the rendezvous binds a free port itself, so there is no window between choosing a port and
    # binding it in which another process could take it (as with --master_port).
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, out, [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def _assert_process_group_threads_joined(summaries: list[dict]) -> None:
    """The process group is gone with its worker threads (gloo starts 3 here), so none of them can outlive the
    interpreter: one still releasing a finished collective at exit aborted the process (Trainer.close)."""
    for s in summaries:
        assert s["threads_training"] > s["threads_before"]
        assert s["threads_after"] == s["threads_before"], s


def test_two_processes_train_in_sync_and_only_rank_zero_writes(tmp_path):
    proc, out, summaries = _run_two_ranks(tmp_path, epochs=2)
    for s in summaries:
        assert (s["world"], s["backend"], s["in_sync"]) == (2, "gloo", True)
        assert s["samples"] == 48  # DistributedSampler: each rank sees half of the 96 training images
        assert s["steps"] == list(range(1, 13))  # 48 / 8 = 6 steps per epoch, 2 epochs, in lock-step
    first, second = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(first[k], second[k]) for k in first if not k.endswith("num_batches_tracked"))
    # only rank 0 logs: one line per epoch, global batch 16 recorded in the exported model
    history = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2]
    assert proc.stdout.count("epoch 1/2") == 1
    import mobilenets

    effective = mobilenets.read_metadata(out / "run" / "best.safetensors")["training"]["effective"]
    assert (effective["world_size"], effective["global_batch"]) == (2, 16)
    _assert_process_group_threads_joined(summaries)
    # sane: the loss went down and both ranks report the same test accuracy from the sharded evaluation
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert summaries[0]["test_top1"] == summaries[1]["test_top1"]


def test_two_processes_on_a_time_budget_agree_on_the_clock(tmp_path):
    """Each rank has its own clock; they take the mean in the per-step all-reduce, so both follow the same
    learning rate and stop at the same step (a disagreement would hang DDP or leave the replicas apart)."""
    _, _, summaries = _run_two_ranks(tmp_path, epochs=1000, time_budget_min=0.05)
    first, second = summaries
    assert first["stopped_by"] == second["stopped_by"] == "time budget"
    assert first["steps"] == second["steps"] and 6 < len(first["steps"]) < 6000
    assert first["lr"] == second["lr"] and first["in_sync"] and second["in_sync"]
    _assert_process_group_threads_joined(summaries)

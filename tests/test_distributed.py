"""Data-parallel training under torchrun (CPU, gloo, 2 processes on localhost).

The two-process jobs run ``tests/_distributed_worker.py`` through ``torch.distributed.run
--standalone``; the single-process reference is the same worker code run in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from boundary_unlearning import distributed, distributed_training
from boundary_unlearning.cli import _without_nproc
from boundary_unlearning.cli_parser import build_parser
from boundary_unlearning.errors import ConfigError
from boundary_unlearning.training import fit
from conftest import THREADS, build_tiny, make_blobs, state_snapshot

WORKER = Path(__file__).with_name("_distributed_worker.py")
TIMEOUT = 180  # a hung collective must fail the test, not the CI job


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc-per-node={nproc}", *args],
        capture_output=True, text=True, timeout=TIMEOUT, env=env,
    )  # fmt: skip


def assert_states_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5, msg=key)


# --- single process: everything is a no-op ---------------------------------------------------


def test_outside_torchrun_nothing_is_distributed() -> None:
    assert not distributed.is_distributed()
    assert (distributed.world_size(), distributed.rank()) == (1, 0)
    assert distributed.is_main_process()
    t = torch.arange(6.0).view(3, 2)
    assert distributed.all_reduce_sum(t) is t
    assert distributed.gather_rows(t, 3) is t
    assert distributed.all_ranks(True) and not distributed.all_ranks(False)
    assert distributed.shard_range(7) == (0, 7)
    assert distributed_training.distributed_fit(nn.Linear(2, 2), []) is None
    assert not distributed.init_distributed("cpu") or distributed.launched_by_torchrun()


def test_fit_shard_flag_changes_nothing_in_one_process() -> None:
    x, y = make_blobs(10, seed=4).tensors
    a, b = build_tiny("cnn", seed=1), build_tiny("cnn", seed=1)
    fit(a, (x, y), epochs=1, lr=0.05, batch_size=8, seed=2)
    fit(b, (x, y), epochs=1, lr=0.05, batch_size=8, seed=2, shard=False)
    sa, sb = state_snapshot(a), state_snapshot(b)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(("n", "world"), [(10, 2), (7, 2), (1, 2), (0, 3), (17, 4)])
def test_shard_range_deals_rows_like_tensor_split(
    monkeypatch: pytest.MonkeyPatch, n: int, world: int
) -> None:
    rows = torch.arange(n)
    expected = rows.tensor_split(world)
    monkeypatch.setattr(distributed, "world_size", lambda: world)
    for r in range(world):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        start, stop = distributed.shard_range(n)
        assert torch.equal(rows[start:stop], expected[r])


def test_backend_is_nccl_on_gpus_and_gloo_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(distributed.BACKEND_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.choose_backend("auto") == "gloo"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert distributed.choose_backend(None) == "nccl"
    assert distributed.choose_backend("cuda:0") == "nccl"
    assert distributed.choose_backend("cpu") == "gloo"
    monkeypatch.setenv(distributed.BACKEND_ENV, "gloo")
    assert distributed.choose_backend("cuda") == "gloo"


def test_launch_goes_through_torch_distributed_run() -> None:
    cmd = distributed.launch_command(["train", "--out", "x"], 3)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in cmd and "--nproc-per-node=3" in cmd
    assert cmd[-5:] == ["-m", "boundary_unlearning", "train", "--out", "x"]
    with pytest.raises(ConfigError, match="--nproc"):
        distributed.launch(["train"], 0)


def test_cli_takes_nproc_on_train_and_run_and_strips_it_for_the_ranks() -> None:
    parser = build_parser()
    assert parser.parse_args(["train", "--out", "d", "--nproc", "2"]).nproc == 2
    assert parser.parse_args(["run", "--out", "d", "--nproc", "2"]).nproc == 2
    assert parser.parse_args(["train", "--out", "d"]).nproc is None
    argv = ["run", "--nproc", "2", "--out", "d", "--nproc=3", "--npr", "4", "--seed", "1"]
    assert _without_nproc(argv) == ["run", "--out", "d", "--seed", "1"]


# --- two processes ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_rank_job(
    _trained_tiny: nn.Module, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], Path, dict[str, Any]]:
    """One 2-rank job (launches cost seconds of imports each): the worker's ``equivalence``
    scenario, then its ``fail`` scenario. Returns (the job, its output folder, the same
    computations in this one process)."""
    sys.path.insert(0, str(WORKER.parent))
    try:
        import _distributed_worker as worker
    finally:
        sys.path.remove(str(WORKER.parent))
    out = tmp_path_factory.mktemp("ddp")
    original = {k: v.detach().clone() for k, v in _trained_tiny.state_dict().items()}
    torch.save(original, out / "original.pt")
    proc = torchrun(str(WORKER), "equivalence+fail", str(out), str(out / "original.pt"))
    with worker.one_thread():  # as each rank computes
        return proc, out, worker.compute(original)


def test_the_single_process_reference_leaves_the_thread_count_alone(
    two_rank_job: tuple[subprocess.CompletedProcess[str], Path, dict[str, Any]],
) -> None:
    """Importing the worker set this process to 1 thread for every later test (issue 13:
    the kill-and-resume test then compared a 2-thread subprocess with a 1-thread reference
    and failed in full runs only)."""
    assert torch.get_num_threads() == THREADS


@pytest.fixture(scope="module")
def two_rank_results(
    two_rank_job: tuple[subprocess.CompletedProcess[str], Path, dict[str, Any]],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(single-process results, [rank 0 results, rank 1 results])."""
    proc, out, single = two_rank_job
    if not all((out / f"rank-{r}.pt").is_file() for r in range(2)):
        pytest.fail(f"the 2-rank job saved no results:\n{proc.stderr[-3000:]}")
    ranks = [torch.load(out / f"rank-{r}.pt", weights_only=False) for r in range(2)]
    return single, ranks


@pytest.mark.parametrize("key", ["fit15", "fit53", "boundary_shrink", "boundary_expanding"])
def test_two_ranks_train_the_same_weights_as_one_process(
    two_rank_results: tuple[dict[str, Any], list[dict[str, Any]]], key: str
) -> None:
    """Same global batch and seed: one epoch of training (uneven shares; a last batch of one
    sample, so one rank's share is empty) and both Boundary methods match one process."""
    single, ranks = two_rank_results
    for result in ranks:
        assert_states_close(result[key], single[key])
    # every rank holds the very same model
    assert all(torch.equal(ranks[0][key][k], ranks[1][key][k]) for k in single[key])
    # and training moved it: the comparison is not vacuous
    if key.startswith("fit"):
        start = state_snapshot(build_tiny("cnn", seed=0))
        assert max(float((single[key][k] - start[k]).abs().max()) for k in start) > 1e-2


def test_neighbour_search_is_sharded_and_gathered(
    two_rank_results: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    single, ranks = two_rank_results
    for result in ranks:
        assert torch.equal(result["neighbour_labels"], single["neighbour_labels"])
        torch.testing.assert_close(result["neighbour_inputs"], single["neighbour_inputs"])
        assert result["success_ratio"] == single["success_ratio"]
        assert result["accuracy"] == single["accuracy"]


def test_a_nan_on_one_rank_stops_every_rank(
    two_rank_results: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    _, ranks = two_rank_results
    for result in ranks:
        assert "NaN or infinite at step 0" in result["divergence"]


def test_a_failing_rank_fails_the_job_and_leaves_no_checkpoint(
    two_rank_job: tuple[subprocess.CompletedProcess[str], Path, dict[str, Any]],
) -> None:
    """Rank 1 raises in the middle of training; rank 0 would save the model after it."""
    proc, out, _ = two_rank_job
    assert proc.returncode != 0
    assert "injected failure on rank 1 at step 2" in proc.stdout + proc.stderr
    assert not (out / "ckpt").exists()  # no checkpoint, not even a temporary file
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_every_method_on_two_ranks_matches_one_process(
    tiny_model: nn.Module, tmp_path: Path
) -> None:
    """Every registered method but amnesiac (about 30-60 s on two busy cores)."""
    sys.path.insert(0, str(WORKER.parent))
    try:
        import _distributed_worker as worker
    finally:
        sys.path.remove(str(WORKER.parent))
    original = {k: v.detach().clone() for k, v in tiny_model.state_dict().items()}
    torch.save(original, tmp_path / "original.pt")
    proc = torchrun(str(WORKER), "methods", str(tmp_path), str(tmp_path / "original.pt"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with worker.one_thread():
        single = worker.every_method(original)
    for r in range(2):
        ranks = torch.load(tmp_path / f"rank-{r}.pt", weights_only=False)
        assert ranks.keys() == single.keys()
        for name, weights in single.items():
            assert_states_close(ranks[name], weights)


@pytest.mark.slow
def test_bunlearn_train_nproc_2_records_world_size(tmp_path: Path) -> None:
    """``bunlearn train --nproc 2`` on digits (about 20-40 s on two busy cores)."""
    env = {**os.environ, "BUNLEARN_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "boundary_unlearning", "train", "--dataset", "digits",
         "--model", "cnn", "--epochs", "1", "--nproc", "2", "--out", str(tmp_path / "m"),
         "--quiet"],
        capture_output=True, text=True, timeout=TIMEOUT, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["world_size"] == 2
    assert meta["test_accuracy"] > 0.5

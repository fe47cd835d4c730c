"""Smoke test of benchmarks/bench_unlearning.py's pieces on the tiny fixtures (no timing
targets here: those live in the benchmark's own output)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from boundary_unlearning import UnlearningData, unlearn
from boundary_unlearning.data import to_tensors
from conftest import same_state, state_snapshot

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_unlearning.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_unlearning", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_unlearning"] = module
    spec.loader.exec_module(module)
    return module


HP = {
    "eps": 0.1, "lr": 1e-3, "epochs": 2, "momentum": 0.9, "weight_decay": 0.0,
    "batch_size": 8, "seed": 0, "bn": "train",
}  # fmt: skip
FLOOR_HP = {**HP, "layers": "head"}


def test_authors_loop_gives_our_model_exactly(
    bench: ModuleType, tiny_model: nn.Module, tiny_data: UnlearningData
) -> None:
    """Recomputing the neighbour labels at every step (the authors' loop) changes nothing:
    the labels match ours and the fine-tuned weights are identical."""
    device = torch.device("cpu")
    theirs, seconds, mismatches = bench.authors_loop(tiny_model, tiny_data, HP, device)
    ours = unlearn("boundary_shrink", tiny_model, tiny_data, preset="paper", **HP)
    assert mismatches == 0
    assert seconds > 0
    assert same_state(state_snapshot(theirs), state_snapshot(ours))


def test_floors_run_and_leave_the_model_alone(
    bench: ModuleType, tiny_model: nn.Module, tiny_data: UnlearningData
) -> None:
    before = state_snapshot(tiny_model)
    x, y = to_tensors(tiny_data.forget)
    device = torch.device("cpu")
    k = tiny_data.num_classes
    for hp in (FLOOR_HP, {**FLOOR_HP, "layers": "all"}):
        assert bench.shrink_floor(tiny_model, x, y, k, hp, device, steps=3) > 0
        assert bench.expand_floor(tiny_model, x, k, hp, device, steps=3) > 0
    assert same_state(before, state_snapshot(tiny_model))


def test_peak_memory_sees_a_large_allocation(bench: ModuleType) -> None:
    with bench.PeakMemory(torch.device("cpu")) as mem:
        block = torch.ones(64 * 2**20 // 4)  # 64 MB
        del block
    assert mem.peak_mb is not None
    if mem.kind.startswith("peak RSS"):  # resettable peak: the 64 MB must show
        assert mem.peak_mb > 48


def test_subset_table_and_hyperparameters(bench: ModuleType) -> None:
    x = torch.rand(30, 1, 4, 4)
    y = torch.arange(30) % 3
    sub = bench.balanced_subset(TensorDataset(x, y), 4)
    assert torch.bincount(sub.tensors[1]).tolist() == [4, 4, 4]
    row = bench.Row("boundary_shrink", "boundary_shrink", "forget", 2.0, [2.0, 3.0])
    row.accuracy = {"forget": 0.05, "test_forget": 0.04, "test_retain": 0.9, "retain": 0.95}
    table = bench.format_table([row], 50.0, "peak RSS")
    assert "| boundary_shrink | forget | 2.00 | 25.0 | 5.0 | 4.0 | 90.0 | 95.0 |" in table
    config = bench.BenchConfig(quick=True)
    hp = bench.method_hyperparameters("retrain", config, None)
    assert hp["epochs"] == bench.EPOCHS and hp["lr"] == bench.RECIPE["lr"]
    assert bench.method_hyperparameters("amnesiac", config, "REC")["record"] == "REC"


@pytest.mark.parametrize("flag", ["--repeats", "--epochs"])
def test_zero_repeats_or_epochs_is_refused_in_one_line(
    bench: ModuleType, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # --repeats 0 used to train for minutes and then end in "min() arg is an empty sequence"
    # (the floor ratio divides by the fastest floor run)
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(["--quick", flag, "0"])
    assert exit_info.value.code == 2
    assert f"argument {flag}: '0' is not a whole number >= 1" in capsys.readouterr().err
    assert getattr(bench.parse_args([flag, "2"]), flag[2:]) == 2


def test_depth_shares_sit_beside_the_raw_depth_values(bench: ModuleType) -> None:
    rows = [bench.Row(name, name, "-") for name in ("original", "retrain", "boundary_shrink")]
    for row, (relearn, probe) in zip(rows, [(0, 0.9), (30, 0.5), (15, 0.8)], strict=True):
        row.depth = {"relearn_steps": relearn, "probe_forget_acc": probe}
    bench.add_depth_shares(rows)
    bs = rows[2].depth
    assert bs["relearn_steps"] == 15 and bs["probe_forget_acc"] == 0.8  # the raw values stay
    assert bs["depth_shares"] == {"relearn_steps": 0.5, "probe_forget_acc": pytest.approx(0.25)}
    assert bs["depth"] == pytest.approx(0.25)
    assert "15 | 80.0 | 0.25" in bench._depth_cells(rows[2])

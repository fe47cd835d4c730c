"""A user's own model and data: the one normalisation rule, ``--model MODULE:FUNCTION``."""

from __future__ import annotations

import gzip
import json
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import TensorDataset

import boundary_unlearning as bu
from boundary_unlearning.cli import main
from boundary_unlearning.errors import CheckpointError, DataError, HyperparameterError, ModelError
from boundary_unlearning.models import create_model, import_model_function
from conftest import EatsNormalised

FMNIST = Path("/usr/share/datasets/fashion-mnist")
FMNIST_NORM = (0.286, 0.353)

USER_MODULE = textwrap.dedent(
    """
    from torch import nn


    def small_cnn(num_classes: int = 10) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, num_classes),
        )


    def tiny_mlp(num_classes: int = 10) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, num_classes))
    """
)


def _normalised_split(
    tiny_sets: tuple[TensorDataset, TensorDataset], mean: float, std: float
) -> bu.UnlearningData:
    norm = [TensorDataset((ds.tensors[0] - mean) / std, ds.tensors[1]) for ds in tiny_sets]
    return bu.class_split(norm[0], norm[1], [1], normalization=(mean, std))


def test_the_split_carries_scalar_or_per_channel_normalization(tiny_sets) -> None:
    data = _normalised_split(tiny_sets, 0.3, 0.3)
    assert data.normalization == ((0.3,), (0.3,))
    train_set, test_set = tiny_sets
    same = bu.class_split(
        TensorDataset((train_set.tensors[0] - 0.3) / 0.3, train_set.tensors[1]),
        TensorDataset((test_set.tensors[0] - 0.3) / 0.3, test_set.tensors[1]),
        [1],
        normalization=([0.3], torch.tensor([0.3], dtype=torch.float64)),
    )
    assert same.normalization == data.normalization


def test_pixels_declared_normalised_are_caught(tiny_sets) -> None:
    """The silent mistake of the issue: raw [0, 1] data plus normalization=(mean, std)."""
    train_set, test_set = tiny_sets
    with pytest.raises(DataError, match="already lie in .* drop normalization"):
        bu.class_split(train_set, test_set, [1], normalization=FMNIST_NORM)


def test_normalised_data_without_normalization_are_caught(tiny_sets) -> None:
    norm = [TensorDataset((ds.tensors[0] - 0.3) / 0.1, ds.tensors[1]) for ds in tiny_sets]
    with pytest.raises(DataError, match=r"not pixels in \[0, 1\]; .*normalization=\(mean"):
        bu.class_split(norm[0], norm[1], [1])
    with pytest.raises(DataError, match=r"outside \[0, 1\]"):  # the wrong mean/std
        bu.class_split(norm[0], norm[1], [1], normalization=(0.3, 0.5))


@pytest.mark.parametrize("bad", [(0.5,), (0.5, 0.0), (0.5, float("nan")), "0.5,0.5", (0.5, "a")])
def test_bad_normalization_is_one_clear_line(tiny_sets, bad) -> None:
    with pytest.raises(DataError, match="normalization"):
        bu.class_split(*tiny_sets, [1], normalization=bad)


def test_every_method_takes_the_normalised_split(tiny_sets, tiny_model) -> None:
    """One call for every method works on a normalised split; Boundary Shrink steps in pixel
    space (its neighbours are the pixel model's, normalised)."""
    data = _normalised_split(tiny_sets, 0.3, 0.3)
    model = EatsNormalised(tiny_model)
    for name in bu.list_methods():
        if bu.get_method(name).cost == "record":
            continue  # amnesiac needs a recording of the original's training
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            new = bu.unlearn(name, model, data, **_short(name))
        assert isinstance(new, nn.Module) and new is not model, name
    with pytest.raises(HyperparameterError, match="normalization belongs to the data"):
        bu.unlearn("boundary_expanding", model, data, normalization=(0.3, 0.3))


def _short(name: str) -> dict[str, int]:
    keys = bu.get_method(name).hyperparameters
    return {k: 2 for k in ("max_steps", "epochs", "steps", "feature_steps") if k in keys}


@pytest.mark.filterwarnings("ignore::boundary_unlearning.ForgettingWarning")
def test_shrink_on_normalised_data_equals_shrink_on_pixels(tiny_sets, tiny_model) -> None:
    """The same network fed pixels (normalising inside) or normalised data (the split says
    how) gives the same neighbour labels and the same unlearned head."""
    pixels = bu.class_split(*tiny_sets, [1])
    normed = _normalised_split(tiny_sets, 0.3, 0.3)  # the tiny model's Normalize values
    a = bu.boundary_shrink(tiny_model, pixels, max_steps=5, target_forget_acc=0.0)
    b = bu.boundary_shrink(EatsNormalised(tiny_model), normed, max_steps=5, target_forget_acc=0.0)
    assert bu.unlearning_stats(a)["attack_success_ratio"] == pytest.approx(
        bu.unlearning_stats(b)["attack_success_ratio"]
    )
    torch.testing.assert_close(a.head.weight, b.head.weight, atol=1e-5, rtol=1e-4)


def test_model_function_import_errors(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "usernets.py").write_text(USER_MODULE)
    assert import_model_function("usernets:small_cnn").__name__ == "small_cnn"
    assert import_model_function("torchvision.models:resnet18").__name__ == "resnet18"
    with pytest.raises(ModelError, match="no nosuch.py"):
        import_model_function("nosuch:fn")
    with pytest.raises(ModelError, match="did you mean 'small_cnn'"):
        import_model_function("usernets:smal_cnn")
    with pytest.raises(ModelError, match="not MODULE:FUNCTION"):
        import_model_function("usernets:")
    net = create_model("usernets:tiny_mlp", 4, seed=3)
    again = create_model("usernets:tiny_mlp", 4, seed=3)
    assert torch.equal(net[1].weight, again[1].weight)  # seeded like a zoo model
    assert net[-1].out_features == 4


def _own_fmnist_model(folder: Path, samples: int) -> Path:
    """The user's side: their module, their own training loop, saved with safetensors."""
    (folder / "usernets.py").write_text(USER_MODULE)

    def idx(name: str, skip: int) -> np.ndarray:
        with gzip.open(FMNIST / f"{name}.gz") as f:
            return np.frombuffer(f.read(), np.uint8)[skip:]

    x = torch.tensor(idx("train-images-idx3-ubyte", 16).reshape(-1, 1, 28, 28)[:samples].copy())
    y = torch.tensor(idx("train-labels-idx1-ubyte", 8)[:samples].astype(np.int64))
    x = (x.float() / 255 - FMNIST_NORM[0]) / FMNIST_NORM[1]
    net = import_model_function("usernets:small_cnn")(num_classes=10)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for i, start in enumerate(range(0, samples, 128)):
        order = torch.randperm(samples, generator=gen) if i == 0 else order  # noqa: F821
        b = order[start : start + 128]
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[b]), y[b]).backward()
        opt.step()
    save_file(net.state_dict(), str(folder / "net.safetensors"))
    return folder / "net.safetensors"


@pytest.mark.slow
@pytest.mark.skipif(not FMNIST.is_dir(), reason="needs the Debian dataset-fashion-mnist files")
def test_cli_unlearns_a_user_cnn_trained_by_its_own_loop(tmp_path, monkeypatch, capsys) -> None:
    """The issue's bar: a user CNN in a file of the working directory, trained by its own
    loop on Fashion-MNIST and saved with safetensors, goes through ``bunlearn unlearn
    --model MODULE:FUNCTION``; the output loads back into the user's function and forgets.

    ``slow`` (26 s on 2 cores: 70k real images): the user-MLP-on-digits CLI test below is its
    fast equivalent, and ``.ci/run`` runs this one by name."""
    monkeypatch.chdir(tmp_path)
    weights = _own_fmnist_model(tmp_path, 20_000)
    before = weights.read_bytes()
    args = ["unlearn", "--model", "usernets:small_cnn", "--checkpoint", str(weights),
            "--dataset", "fashion-mnist", "--forget-class", "sneaker", "--mean", "0.286",
            "--std", "0.353", "--method", "boundary_shrink", "--out", "out", "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert weights.read_bytes() == before  # the user's checkpoint is only read
    net = import_model_function("usernets:small_cnn")(num_classes=10)
    net.load_state_dict(load_file("out/model.safetensors"))
    net.eval()
    meta = json.loads(Path("out/model.json").read_text())
    assert meta["model"] == "usernets:small_cnn"
    assert meta["input_normalization"] == [[0.286], [0.353]]
    report = json.loads(Path("out/report.json").read_text())
    after = report["results"]["boundary_shrink"]
    assert after["stats"]["steps"] >= 1 and after["seconds"] > 0
    # D_tf on the real Fashion-MNIST test set, computed here from the files
    with gzip.open(FMNIST / "t10k-images-idx3-ubyte.gz") as f:
        x = torch.tensor(np.frombuffer(f.read(), np.uint8)[16:].reshape(-1, 1, 28, 28).copy())
    with gzip.open(FMNIST / "t10k-labels-idx1-ubyte.gz") as f:
        y = torch.tensor(np.frombuffer(f.read(), np.uint8)[8:].astype(np.int64))
    with torch.no_grad():
        pred = net((x.float() / 255 - FMNIST_NORM[0]) / FMNIST_NORM[1]).argmax(1)
    forget = y == 7
    d_tf = float((pred[forget] == 7).float().mean())
    d_tr = float((pred[~forget] == y[~forget]).float().mean())
    assert d_tf <= 0.05
    assert d_tf == pytest.approx(after["acc"]["test_forget"], abs=1e-6)
    assert d_tr >= report["results"]["original"]["acc"]["test_retain"] - 0.05
    assert "| Acc on D_tf (%)" in Path("out/report.md").read_text()
    # its metadata names user code: without --model it is refused, never imported
    assert main(["unlearn", "--checkpoint", "out", "--forget-class", "7", "--out", "o2"]) == 2
    assert "code named in a checkpoint is never imported" in capsys.readouterr().err


def test_user_model_from_metadata_is_never_imported(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.py").write_text("open('imported', 'w').close()\ndef net(num_classes): ...\n")
    bu.save_checkpoint(nn.Linear(2, 2), tmp_path / "ck", {"model": "evil:net"})
    meta = json.loads((tmp_path / "ck" / "model.json").read_text())
    meta.update(num_classes=2, in_channels=1, image_size=8, mean=[0.5], std=[0.5])
    (tmp_path / "ck" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="never imported"):
        bu.load_checkpoint(tmp_path / "ck")
    assert not (tmp_path / "imported").exists()


def test_cli_unlearn_and_run_with_a_user_mlp_on_digits(tmp_path, monkeypatch, capsys) -> None:
    """The fast twin of the Fashion-MNIST test: train with `bunlearn train --model
    MODULE:FUNCTION --mean --std`, unlearn with both methods, run the comparison."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "usernets.py").write_text(USER_MODULE)
    common = ["--model", "usernets:tiny_mlp", "--mean", "0.3", "--std", "0.35", "--quiet"]
    assert main(["train", "--dataset", "digits", "--epochs", "15", "--out", "orig", *common]) == 0
    for method in ("boundary_shrink", "boundary_expanding"):
        assert main(["unlearn", "--checkpoint", "orig", "--forget-class", "3", "--method",
                     method, "--out", method, *common]) == 0  # fmt: skip
        report = json.loads(Path(method, "report.json").read_text())
        assert report["results"][method]["acc"]["test_forget"] <= 0.05
        net = import_model_function("usernets:tiny_mlp")(num_classes=10)
        net.load_state_dict(load_file(f"{method}/model.safetensors"))  # loads straight back
    assert main(["run", "--dataset", "digits", "--epochs", "15", "--methods", "boundary_shrink",
                 "--no-figures", "--no-relearn", "--out", "run", *common]) == 0  # fmt: skip
    report = json.loads(Path("run", "report.json").read_text())
    assert report["results"]["boundary_shrink"]["acc"]["forget"] <= 0.05
    assert main(["unlearn", "--checkpoint", "orig", "--forget-class", "3", "--out", "x",
                 "--model", "usernets:tiny_mlp", "--mean", "0.3"]) == 2  # fmt: skip
    assert "give both --mean and --std" in capsys.readouterr().err


def test_torchvision_resnet18_as_a_model_value(tmp_path, monkeypatch) -> None:
    """`--model torchvision.models:resnet18` on 3-channel data (CIFAR-10's on-disk format)."""
    import pickle

    import torchvision

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
                 "labels": [i % 10 for i in range(20)]}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    torch.manual_seed(0)
    save_file(torchvision.models.resnet18(num_classes=10).state_dict(), "r18.safetensors")
    args = ["unlearn", "--model", "torchvision.models:resnet18", "--checkpoint",
            "r18.safetensors", "--dataset", "cifar10", "--data-root", "cifar", "--forget-class",
            "3", "--method", "boundary_expanding", "--set", "max_steps=3", "--set",
            "feature_steps=2", "--out", "out",
            "--quiet", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 3 steps need not reach the target
        assert main(args) == 0
    net = torchvision.models.resnet18(num_classes=10)
    net.load_state_dict(load_file("out/model.safetensors"))
    assert json.loads(Path("out/model.json").read_text())["input_normalization"] == [
        [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]]  # fmt: skip


def test_evaluate_says_where_normalization_belongs(tiny_data, tiny_model) -> None:
    with pytest.raises(DataError, match="normalization belongs to the data"):
        bu.evaluate(tiny_model, tiny_data, normalization=(0.5, 0.5))

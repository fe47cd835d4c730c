"""``bunlearn reproduce``: the shipped suites, and the suite machinery end to end on tiny
synthetic stand-ins written in the real on-disk formats (CIFAR-10 python batches, an image
folder of PNGs)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from boundary_unlearning.cli import main
from boundary_unlearning.errors import ConfigError
from boundary_unlearning.methods import get_method, list_methods, validate_hyperparameters
from boundary_unlearning.reproduce import PUBLISHED, _settings
from boundary_unlearning.suites import apply_overrides, list_suites, load_suite

SHIPPED = ("cifar10-allcnn", "digits", "fashion-mnist", "vggface2-resnet50")
PAPER_METHODS = (
    "finetune", "neg_grad", "random_labels", "amnesiac", "fisher",
    "boundary_shrink", "boundary_expanding",
)  # fmt: skip


def _pattern(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """An RGB image (H, W, 3) whose colour and bright quadrant depend on the class."""
    img = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
    half = size // 2
    r, q = divmod(label % 4, 2)
    img[r * half : (r + 1) * half, q * half : (q + 1) * half, label % 3] = 200 + 5 * label
    return img


def write_cifar_standin(root: Path, per_class: int = 1, test_per_class: int = 1) -> Path:
    """``root/cifar-10-batches-py`` with five training batches and a test batch, 10 classes."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n_per_class: int) -> dict[str, object]:
        labels = [c for c in range(10) for _ in range(n_per_class)]
        images = np.stack([_pattern(c, rng, 32).transpose(2, 0, 1) for c in labels])
        return {"data": images.reshape(len(labels), -1), "labels": labels}

    for i in range(1, 6):
        with (folder / f"data_batch_{i}").open("wb") as fh:
            pickle.dump(batch(per_class), fh, protocol=2)
    with (folder / "test_batch").open("wb") as fh:
        pickle.dump(batch(test_per_class), fh, protocol=2)
    return root


def write_imagefolder_standin(root: Path, classes: int = 5, per_class: int = 3) -> Path:
    """``root/<identity>/<n>.png``: a face-folder stand-in the image-folder loader reads."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for c in range(classes):
        (root / f"id{c:02d}").mkdir(parents=True)
        for n in range(per_class):
            Image.fromarray(_pattern(c, rng, 24)).save(root / f"id{c:02d}" / f"{n}.png")
    return root


# ------------------------------------------------------------------------- shipped suites
def test_shipped_suites_are_listed() -> None:
    assert set(SHIPPED) <= set(list_suites())


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("quick", [False, True])
def test_shipped_suite_hyperparameters_are_valid(name: str, quick: bool) -> None:
    suite = load_suite(name, quick=quick)
    registered = set(list_methods())
    for method, hparams in suite["hyperparameters"].items():
        assert method in registered, f"{name}: unknown method '{method}'"
        validate_hyperparameters(method, hparams)  # names and types
    for study in suite["studies"].values():
        for method in study["methods"]:
            assert method in suite["hyperparameters"], f"{name}: {method} has no settings"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_suites_cover_the_paper_studies(name: str) -> None:
    studies = load_suite(name)["studies"]
    assert set(studies["main"]["methods"]) == set(PAPER_METHODS)
    assert studies["main"].get("compare_paper")
    assert studies["forget_fraction"]["vary"]["forget_fraction"] == [
        0.01, 0.05, 0.1, 0.25, 0.5, 1.0,
    ]  # fmt: skip
    assert {"expand_shrink", "shrink_expand"} <= set(studies["combination"]["methods"])
    search = studies["neighbour_search"]["vary"]
    assert search["boundary_shrink.attack"] == ["fgsm", "pgd"]
    assert min(search["boundary_shrink.eps"]) == 0.01
    assert max(search["boundary_shrink.eps"]) == 0.5
    assert studies["batchnorm"]["vary"]["*.bn"] == ["train", "freeze"]


def test_fashion_mnist_main_table_has_three_seeds_and_paper_settings() -> None:
    suite = load_suite("fashion-mnist")
    assert suite["studies"]["main"]["seeds"] == [0, 1, 2]
    bs = get_method("boundary_shrink").resolve(suite["hyperparameters"]["boundary_shrink"])
    assert (bs["eps"], bs["lr"], bs["epochs"], bs["batch_size"]) == (0.1, 1e-5, 10, 64)
    assert (bs["target_forget_acc"], bs["layers"], bs["bn"]) == (None, "all", "train")
    assert load_suite("fashion-mnist", quick=True)["studies"]["main"]["seeds"] == [0]


@pytest.mark.parametrize("name", ["cifar10-allcnn", "vggface2-resnet50"])
def test_paper_suites_use_the_paper_setting(name: str) -> None:
    experiment = load_suite(name)["experiment"]
    assert experiment["mean"] == [0.5] * 3 and experiment["std"] == [0.5] * 3
    assert (experiment["epochs"], experiment["lr"], experiment["batch_size"]) == (50, 0.01, 64)
    assert experiment["forget_classes"] == [4]
    if name == "cifar10-allcnn":
        assert experiment["model"] == "allcnn"
        assert experiment["model_options"] == {"width_factor": 0.5}
    else:
        assert (experiment["dataset"], experiment["model"]) == ("imagefolder", "resnet50")


def test_published_numbers_match_paper_md() -> None:
    assert PUBLISHED["cifar10"]["boundary_shrink"] == {
        "retain": 99.24, "forget": 5.94, "test_retain": 83.13, "test_forget": 5.94,
    }  # fmt: skip
    assert PUBLISHED["vggface2"]["boundary_expanding"]["test_forget"] == 1.41
    assert PUBLISHED["cifar10"]["fisher"]["retain"] == 61.62


# ------------------------------------------------------------------------------- errors
def test_unknown_suite_names_the_shipped_ones() -> None:
    with pytest.raises(ConfigError, match="shipped suites: .*digits"):
        load_suite("digit")


def test_unknown_keys_are_named(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("experiment: {dataset: digits, epoch: 3}\nstudies: {main: {methods: [x]}}\n")
    with pytest.raises(ConfigError, match="epoch"):
        load_suite(path)
    path.write_text("experiment: {}\nstudies: {main: {methods: [x], seed: [0]}}\n")
    with pytest.raises(ConfigError, match="seed"):
        load_suite(path)


def test_overrides_set_dotted_paths() -> None:
    suite = apply_overrides(
        load_suite("digits"),
        {"experiment.epochs": 1, "hyperparameters.boundary_shrink.eps": 0.5},
    )
    assert suite["experiment"]["epochs"] == 1
    assert suite["hyperparameters"]["boundary_shrink"]["eps"] == 0.5
    with pytest.raises(ConfigError, match="must start with"):
        apply_overrides(suite, {"epochs": 1})


def test_sweep_settings_reach_the_right_methods() -> None:
    suite = load_suite("digits")
    methods = ["boundary_shrink", "boundary_expanding"]
    study = suite["studies"]["batchnorm"]
    settings = _settings(suite, study, methods, {"*.bn": "freeze"}, {"device": "cpu"})
    assert {m: settings["hyperparameters"][m]["bn"] for m in methods} == dict.fromkeys(
        methods, "freeze"
    )
    assert settings["device"] == "cpu" and settings["methods"] == methods
    settings = _settings(suite, study, methods, {"boundary_shrink.eps": 0.5,
                                                 "forget_fraction": 0.1}, {})  # fmt: skip
    assert settings["hyperparameters"]["boundary_shrink"]["eps"] == 0.5
    assert "eps" not in settings["hyperparameters"]["boundary_expanding"]
    assert settings["forget_fraction"] == 0.1
    with pytest.raises(ConfigError, match="does not run"):
        _settings(suite, study, methods, {"finetune.lr": 0.1}, {})


def test_cli_reproduce_rejects_a_bad_suite(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "--suite", "nope", "--out", "x"]) == 2
    assert "unknown suite 'nope'" in capsys.readouterr().err
    assert main(["reproduce", "--list"]) == 0
    assert "fashion-mnist" in capsys.readouterr().out


# ------------------------------------------------------------------ end to end, stand-ins
# Overrides that make the paper suites run in seconds on the stand-ins: one epoch, tiny
# batches, BS and BE only in the main table, one value per sweep.
FAST = [
    "--set", "experiment.epochs=1",
    "--set", "experiment.batch_size=16",
    "--set", "experiment.relearn=false",
    "--set", "studies.main.methods=[boundary_shrink,boundary_expanding]",
    "--set", "studies.main.seeds=[0]",
    "--set", "hyperparameters.boundary_shrink.epochs=1",
    "--set", "hyperparameters.boundary_expanding.epochs=1",
    "--set", "studies.forget_fraction.vary.forget_fraction=[0.5]",
    "--set", "studies.neighbour_search.vary={boundary_shrink.attack: [fgsm, pgd], "
             "boundary_shrink.eps: [0.1]}",
    "--set", "studies.learning_rate.vary={'*.lr': [0.001]}",
    "--set", "studies.main.experiment={figures: false}",
]  # fmt: skip


def _cached_means(cache: Path) -> list[list[float]]:
    return [json.loads(p.read_text())["mean"] for p in cache.glob("originals/*/model.json")]


def test_cifar10_suite_end_to_end_on_a_standin(tmp_path: Path) -> None:
    root = write_cifar_standin(tmp_path / "data")
    out, cache = tmp_path / "out", tmp_path / "cache"
    code = main([
        "reproduce", "--suite", "cifar10-allcnn", "--data-root", str(root), "--out", str(out),
        "--cache-dir", str(cache), "--device", "cpu", "--quiet", *FAST,
        "--set", "experiment.model_options.width_factor=0.125",
        "--studies", "main,neighbour_search",
    ])  # fmt: skip
    assert code == 0
    # the paper's 0.5/0.5 normalisation reached the model (and its cache key)
    assert _cached_means(cache) == [[0.5, 0.5, 0.5]]
    # one original, one retrain: every study reused them
    assert len(list(cache.glob("retrained/*/model.json"))) == 1
    main_report = json.loads((out / "main" / "report.json").read_text())
    assert {"original", "retrain", "boundary_shrink", "boundary_expanding"} <= set(
        main_report["results"]
    )
    assert main_report["config"]["model_options"] == {"width_factor": 0.125}
    sweep = json.loads((out / "neighbour_search" / "report.json").read_text())
    assert [v["setting"] for v in sweep["variants"]] == [
        {"boundary_shrink.attack": "fgsm", "boundary_shrink.eps": 0.1},
        {"boundary_shrink.attack": "pgd", "boundary_shrink.eps": 0.1},
    ]
    for variant in sweep["variants"]:
        report = json.loads(
            (out / "neighbour_search" / variant["folder"] / "report.json").read_text()
        )
        hp = report["results"]["boundary_shrink"]["hyperparameters"]
        assert (hp["attack"], hp["eps"]) == tuple(variant["setting"].values())
    summary = (out / "summary.md").read_text()
    assert "| *paper, CIFAR-10, All-CNN* |" in summary
    assert "5.94" in summary and "99.97" in summary  # BS D_f and original D_r, published
    for study in ("main", "neighbour_search"):
        assert f"(`{study}/`)" in summary
    run = json.loads((out / "run.json").read_text())
    assert set(run["studies"]) == {"main", "neighbour_search"}
    assert all("error" not in s for s in run["studies"].values())
    assert (out / "suite.yaml").is_file()
    # a second run into the same folder must be asked for
    assert main(["reproduce", "--suite", "cifar10-allcnn", "--out", str(out), "--quiet"]) == 2


def _run_vggface2_standin(tmp_path: Path, *extra: str) -> Path:
    root = write_imagefolder_standin(tmp_path / "faces")
    out, cache = tmp_path / "out", tmp_path / "cache"
    code = main([
        "reproduce", "--suite", "vggface2-resnet50", "--data-root", str(root), "--out", str(out),
        "--cache-dir", str(cache), "--device", "cpu", "--quiet", *FAST,
        "--studies", "main,forget_fraction", *extra,
    ])  # fmt: skip
    assert code == 0
    assert _cached_means(cache) == [[0.5, 0.5, 0.5]]
    report = json.loads((out / "main" / "report.json").read_text())
    assert report["dataset"] == "imagefolder"
    assert report["class_names"] == ["id04"]  # forget class 4 = the fifth identity folder
    summary = (out / "summary.md").read_text()
    assert "| *paper, VGGFace2, ResNet-50* |" in summary
    fraction = json.loads((out / "forget_fraction" / "report.json").read_text())
    assert fraction["variants"][0]["report"]["config"]["forget_fraction"] == 0.5
    return out


def test_vggface2_suite_end_to_end_on_an_image_folder(tmp_path: Path) -> None:
    """The suite machinery on PNG identity folders; the small CNN replaces ResNet-50 here so
    that the test stays fast (the next, slow test runs ResNet-50 itself)."""
    out = _run_vggface2_standin(tmp_path, "--set", "experiment.model=cnn",
                                "--set", "experiment.model_options={width: 4}")  # fmt: skip
    assert json.loads((out / "main" / "report.json").read_text())["model"] == "cnn"


@pytest.mark.slow
def test_vggface2_suite_with_resnet50_on_an_image_folder(tmp_path: Path) -> None:
    out = _run_vggface2_standin(tmp_path)
    assert json.loads((out / "main" / "report.json").read_text())["model"] == "resnet50"


@pytest.mark.slow  # end to end, 20-60 s: .ci/run runs it by name
def test_digits_quick_suite_end_to_end(tmp_path: Path) -> None:
    """``--quick`` on real digits: every study, fewer settings (about 30 s on two idle cores,
    from an empty cache). Checks the runner's output, that Boundary Shrink forgets with the
    library's defaults and that the main table runs the paper's loop (which does not forget
    digits' 146 forget images: 30 steps at lr 1e-5)."""
    out = tmp_path / "out"
    code = main(["reproduce", "--suite", "digits", "--quick", "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache"), "--quiet"])  # fmt: skip
    assert code == 0
    run = json.loads((out / "run.json").read_text())
    assert set(run["studies"]) == set(load_suite("digits")["studies"])
    assert all("error" not in s and not s["skipped_methods"] for s in run["studies"].values())
    main_report = json.loads((out / "main" / "report.json").read_text())
    assert set(PAPER_METHODS) <= set(main_report["results"])
    original = main_report["results"]["original"]["acc"]
    paper = main_report["results"]["boundary_shrink"]
    assert paper["hyperparameters"]["preset"] == "paper"
    assert paper["acc"]["forget"] > 0.5
    defaults = json.loads((out / "defaults" / "preset-default" / "report.json").read_text())
    shrink = defaults["results"]["boundary_shrink"]["acc"]
    assert shrink["forget"] <= 0.05
    assert shrink["test_retain"] >= original["test_retain"] - 0.02
    assert (out / "main" / "figures").is_dir()
    assert len(list(out.glob("originals"))) == 0  # the cache stays out of the results


@pytest.mark.slow
def test_digits_suite_runs_in_full(tmp_path: Path) -> None:
    """The CI/newcomer suite itself (35-47 s on two idle cores). ``slow``: the quick suite
    above is its fast equivalent in the default run, and ``.ci/run`` runs this one by name,
    so the whole suite still has to finish in CI."""
    out = tmp_path / "out"
    assert main(["reproduce", "--suite", "digits", "--out", str(out), "--quiet"]) == 0
    summary = (out / "summary.md").read_text()
    for study in load_suite("digits")["studies"]:
        assert f"(`{study}/`)" in summary

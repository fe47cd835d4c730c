"""YAML configs for ``bunlearn run --config``: typed validation, overrides, the resolved file."""

from __future__ import annotations

from pathlib import Path

import pytest

from boundary_unlearning.cli import main, run_settings
from boundary_unlearning.cli_parser import build_parser
from boundary_unlearning.config import (
    ExperimentConfig,
    check_config_values,
    config_from_file,
    load_config_file,
    write_resolved_config,
)
from boundary_unlearning.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_file_values_are_typed_and_exponents_are_numbers(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "dataset: digits\nmodel: mlp\nepochs: 3\nlr: 1e-2\nseeds: [0, 2]\n"
        "forget_classes: [3, '5']\nmomentum: 1\n"
        "hyperparameters:\n  boundary_shrink: {lr: 1e-5, eps: 0.25}\n",
    )
    config = config_from_file(path)
    assert config.model == "mlp" and config.epochs == 3 and config.seeds == [0, 2]
    # PyYAML reads "1e-2" as a string; the loader turns it into the number it spells
    assert config.lr == 0.01 and isinstance(config.lr, float)
    assert config.momentum == 1.0 and isinstance(config.momentum, float)  # int -> float field
    assert config.hyperparameters == {"boundary_shrink": {"lr": 1e-5, "eps": 0.25}}
    assert config.forget_classes == [3, "5"]
    assert config.seed_list() == [0, 2]


def test_unknown_keys_are_named_with_the_valid_ones(tmp_path: Path) -> None:
    path = _write(tmp_path, "dataset: digits\nepoch: 3\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError) as err:
        config_from_file(path)
    msg = str(err.value)
    assert "'epoch'" in msg and "'learning_rate'" in msg
    assert "valid keys" in msg and "epochs" in msg and "forget_classes" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("epochs: ten\n", "epochs", "int"),
        ("epochs: 2.5\n", "epochs", "int"),
        ("lr: fast\n", "lr", "float"),
        ("download: 'yes please'\n", "download", "bool"),
        ("methods: boundary_shrink\n", "methods", "list[str]"),
        ("seeds: [0, one]\n", "seeds", "list[int] | null"),
        ("hyperparameters: [1, 2]\n", "hyperparameters", "dict[str, dict[str, any]]"),
        ("relearn: 1\n", "relearn", "bool"),
    ],
)
def test_wrong_types_name_key_type_and_value(
    tmp_path: Path, text: str, key: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_file(_write(tmp_path, text))
    msg = str(err.value)
    assert f"'{key}'" in msg and f"expects {expected}" in msg and "got" in msg


def test_unreadable_files_are_clean_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config_file(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config_file(_write(tmp_path, "epochs: [1, 2\nlr: 3\n"))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config_file(_write(tmp_path, "- 1\n- 2\n"))
    assert load_config_file(_write(tmp_path, "")) == {}


def test_python_tags_are_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _write(tmp_path, f"epochs: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config_from_file(path)
    assert not marker.exists()


def test_command_line_flags_override_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "model: mlp\nepochs: 9\nseeds: [0, 1]\nprogress: true\n")
    args = build_parser().parse_args(
        ["run", "--config", str(path), "--epochs", "2", "--quiet", "--out", "x"]
    )
    config = config_from_file(path, run_settings(args))
    assert config.epochs == 2 and config.model == "mlp" and config.seeds == [0, 1]
    assert config.progress is False
    # flags that were not given keep the file's (or the default) value
    args = build_parser().parse_args(["run", "--out", "x", "--seeds", "3,4"])
    assert run_settings(args) == {"seeds": [3, 4]}


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    config = ExperimentConfig(
        model="mlp", seeds=[0, 1], lr=1e-3, hyperparameters={"boundary_shrink": {"lr": 1e-5}}
    )
    path = write_resolved_config(config, tmp_path)
    assert path.name == "config.yaml"
    assert config_from_file(path) == config


def test_from_dict_and_seed_checks() -> None:
    with pytest.raises(ConfigError, match="'batch'"):
        ExperimentConfig.from_dict({"batch": 3})
    with pytest.raises(ConfigError, match="'epochs' expects int"):
        check_config_values(ExperimentConfig, {"epochs": True})
    with pytest.raises(ConfigError, match="seeds is empty"):
        ExperimentConfig(seeds=[]).seed_list()
    with pytest.raises(ConfigError, match="repeat"):
        ExperimentConfig(seeds=[1, 1]).seed_list()
    assert ExperimentConfig(seed=4).seed_list() == [4]


def test_cli_reports_config_errors_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "model: mlp\nepochz: 3\n")
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bunlearn: error:") and "'epochz'" in err and "\n" not in err
    path = _write(tmp_path, "epochs: many\n")
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "'epochs' expects int" in err and "'many'" in err
    assert main(["run", "--seeds", "0,x", "--out", str(tmp_path / "o")]) == 2
    assert "--seeds" in capsys.readouterr().err

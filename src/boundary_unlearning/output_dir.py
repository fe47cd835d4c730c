"""A run's output folder: whether it may be written, whether it already holds a run (and
with which settings, for ``--resume``), and the ``report.json`` it holds read back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ._utils import atomic_write_text
from .config import ExperimentConfig
from .distributed import is_main_process
from .errors import ConfigError, OutputError

__all__ = [
    "check_output_dir",
    "check_resume_matches",
    "check_writable",
    "load_report",
    "resume_changes",
]


def check_writable(out: Path) -> None:
    if not is_main_process():
        return  # under torchrun only rank 0 writes
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        atomic_write_text(probe, "")
        probe.unlink()
    except OSError as exc:
        raise OutputError(
            f"output folder {out} is not writable ({exc.strerror}); choose another --out"
        ) from None


def check_output_dir(out: Path, *, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse to replace the results of an earlier run unless asked to.

    A folder holding ``report.json`` or ``stages/`` needs ``resume`` (continue it, reusing
    finished stages) or ``overwrite`` (start over; its ``stages/`` are deleted)."""
    if resume and overwrite:
        raise ConfigError("pass either --resume (continue) or --overwrite (start over), not both")
    has_report = (out / "report.json").exists()
    has_stages = (out / "stages").is_dir()
    if resume or not (has_report or has_stages):
        return
    if not overwrite:
        what = "the report of an earlier run" if has_report else "an unfinished run"
        raise OutputError(
            f"{out} already holds {what}; pass --resume to continue it, --overwrite to start "
            "over, or choose another --out"
        )
    shutil.rmtree(out / "stages", ignore_errors=True)


# Settings that change nothing in a run's results: a resumed run may differ in these.
_NOT_COMPARED_ON_RESUME = ("progress", "cache_dir", "download", "device")


def _show(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _comparable(key: str, value: Any) -> Any:
    if key == "forget_classes" and isinstance(value, list):
        return [str(v) for v in value]  # --forget-class 3 (text) and forget_classes: [3]
    return value


def resume_changes(config: ExperimentConfig, out: Path) -> list[str]:
    """How ``config`` differs from the run held in ``out`` (its ``config.yaml``), one
    ``"key old -> new"`` per changed setting; progress, cache and device are not compared.
    Empty when ``out`` holds no run."""
    path = out / "config.yaml"
    if not path.is_file():
        return []
    import yaml

    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        old = None
    if not isinstance(old, dict):
        raise ConfigError(
            f"{path} is unreadable, so the settings of the run in {out} are unknown; pass "
            "--overwrite to start over, or choose another --out"
        )
    defaults = ExperimentConfig().to_dict()
    changed = []
    for key, value in config.to_dict().items():
        before = old.get(key, defaults[key])
        if key not in _NOT_COMPARED_ON_RESUME and (
            _comparable(key, before) != _comparable(key, value)
        ):
            changed.append(f"{key} {_show(before)} -> {_show(value)}")
    return changed


def check_resume_matches(config: ExperimentConfig, out: Path) -> None:
    """Refuse to resume ``out`` with settings other than those of the run it holds.

    Reusing finished stages of other settings, or dropping methods, seeds or figures that the
    finished report holds, would silently change the user's results: any difference raises
    :class:`ConfigError` naming each changed key as ``old -> new``."""
    changed = resume_changes(config, out)
    if changed:
        raise ConfigError(
            f"--resume: {out} holds a run with other settings ({'; '.join(changed)}); rerun "
            f"with its flags (or --config {out / 'config.yaml'}) to continue it, pass "
            "--overwrite instead of --resume to start over, or choose another --out"
        )


def load_report(out_dir: str | Path) -> dict[str, Any]:
    """``out_dir/report.json`` as written by
    :func:`~boundary_unlearning.experiment.run_experiment`, checked to be a report.

    Args:
        out_dir: the ``--out`` folder of a finished run.

    Returns:
        The report; :class:`OutputError` if it is missing, corrupt or not a report.
    """
    path = Path(out_dir) / "report.json"
    if not path.is_file():
        raise OutputError(
            f"{path} not found; point `bunlearn report` at the --out folder of a finished "
            "`bunlearn run`"
        )
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise OutputError(
            f"{path} is corrupt ({type(exc).__name__}); rerun `bunlearn run --resume --out "
            f"{path.parent}` to rebuild it from the finished stages"
        ) from None
    if not isinstance(report, dict) or not isinstance(report.get("results"), dict):
        raise OutputError(
            f"{path} is not a bunlearn report (no 'results'); rerun `bunlearn run --resume "
            f"--out {path.parent}`"
        )
    return report

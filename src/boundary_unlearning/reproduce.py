"""``bunlearn reproduce``: run a whole suite of the paper's studies from one YAML file.

A suite (``configs/<name>.yaml`` in this package, or any file of the same form) names the
shared experiment settings, every method's hyperparameters (stated explicitly, with the
reason), and a list of studies: the main table, the "fewer forgetting samples" study, the
combination study, the neighbour-search step study and BatchNorm train vs. freeze (Chen et
al., "Boundary Unlearning", CVPR 2023, and its slides); it is read and checked by
:func:`~boundary_unlearning.suites.load_suite`. Each study runs through
:func:`~boundary_unlearning.experiment.run_experiment`, so trained originals and retrained
models are cached by their settings and shared between studies.

Output: ``OUT/<study>/report.json`` (+ ``report.md``; one sub-folder per setting of a sweep),
``OUT/summary.md`` collecting every study's table with the paper's published number beside
each cell of the main table, ``OUT/suite.yaml`` (the resolved suite) and ``OUT/run.json``
(command, date, machine, seconds per study).
"""

from __future__ import annotations

import copy
import datetime as _dt
import itertools
import os
import platform
import shutil
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import yaml

from ._utils import atomic_write_json, atomic_write_text
from .config import ExperimentConfig, resolve_device
from .errors import ConfigError, OutputError, UnlearningError, did_you_mean
from .experiment import run_experiment
from .methods import list_methods
from .report import write_reports
from .report.summary import PUBLISHED, format_summary
from .suites import _merge

__all__ = ["PUBLISHED", "format_summary", "run_suite"]

Echo = Callable[[str], None]


def _variants(vary: dict[str, list[Any]]) -> list[dict[str, Any]]:
    if not vary:
        return [{}]
    keys = list(vary)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*vary.values())]


def _label(assignment: dict[str, Any]) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in assignment.items())


def _folder_name(assignment: dict[str, Any]) -> str:
    text = "_".join(f"{k.split('.')[-1]}-{v}" for k, v in assignment.items())
    return "".join(c if c.isalnum() or c in "-._" else "-" for c in text) or "default"


def _settings(
    suite: dict[str, Any],
    study: dict[str, Any],
    methods: list[str],
    assignment: dict[str, Any],
    runtime: dict[str, Any],
) -> dict[str, Any]:
    """ExperimentConfig values for one run of a study."""
    settings: dict[str, Any] = _merge(suite.get("experiment", {}), study.get("experiment", {}))
    hparams = _merge(suite.get("hyperparameters", {}), study.get("hyperparameters", {}))
    hparams = {m: dict(hparams.get(m) or {}) for m in methods if m != "retrain"}
    for key, value in assignment.items():
        method, dot, name = key.partition(".")
        if not dot:
            settings[key] = value
            continue
        targets = [m for m in hparams if method in {"*", m}]
        if not targets:
            raise ConfigError(
                f"vary key '{key}' names method '{method}', which this study does not run"
            )
        for target in targets:
            hparams[target][name] = value
    settings.update({k: v for k, v in runtime.items() if v is not None})
    settings["methods"] = methods
    settings["hyperparameters"] = {m: h for m, h in hparams.items() if h}
    return settings


def _run_seeds(
    settings: dict[str, Any],
    seeds: list[int],
    out: Path,
    echo: Echo | None,
    *,
    shared: bool = False,
) -> dict[str, Any]:
    """One experiment over ``seeds`` (mean ± std across them when there are several).

    ``shared``: ``out`` is a sweep's working folder whose finished stages (the original's and
    the retrained model's metrics, which no method hyperparameter changes) the next setting
    reuses; otherwise ``out`` is replaced."""
    config = ExperimentConfig.from_dict({**settings, "seeds": list(seeds)})
    return run_experiment(config, out, echo=echo, reuse_stages=shared, overwrite=not shared)


def _machine(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def run_suite(
    suite: dict[str, Any],
    out_dir: str | Path,
    *,
    studies: Iterable[str] | None = None,
    data_root: str | None = None,
    download: bool | None = None,
    cache_dir: str | None = None,
    device: str | None = None,
    progress: bool = False,
    overwrite: bool = False,
    command: str | None = None,
    echo: Echo | None = None,
) -> dict[str, Any]:
    """Run the suite's studies (all, or those named) and write every report into ``out_dir``.

    Returns the run record (also ``out_dir/run.json``): per study its folder, seconds,
    skipped methods and any error. A study that fails is recorded and the others still run.
    ``out_dir`` holding an earlier suite run needs ``overwrite=True``. ``data_root``,
    ``download``, ``cache_dir`` and ``device`` (when given) replace the suite's settings.

    Args:
        suite: the suite, as :func:`~boundary_unlearning.suites.load_suite` returns it.
        out_dir: the output folder (one sub-folder per study, ``run.json``, ``summary.md``).
        studies: the studies to run (default: all).
        data_root: replaces the experiment's data folder.
        download: replaces the experiment's download setting.
        cache_dir: replaces the cache folder of trained originals.
        device: replaces the experiment's device.
        progress: show progress bars.
        overwrite: replace an earlier suite run in ``out_dir``.
        command: the command line, for the record.
        echo: called with one line per event (default: silent).

    Returns:
        The run record.

    Raises:
        ConfigError: an unknown study name.
        OutputError: ``out_dir`` holds an earlier run and ``overwrite`` is false.

    Example:
        >>> import tempfile
        >>> from boundary_unlearning.suites import load_suite
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "suite.yaml").write_text(
        ...     "{experiment: {dataset: imagefolder, model: mlp, epochs: 1},"
        ...     " studies: {main: {methods: [finetune]}}}"
        ... )
        >>> suite = load_suite(folder / "suite.yaml")
        >>> record = run_suite(suite, folder / "out", data_root=str(folder / "missing"),
        ...                    device="cpu")  # the study fails: recorded, not raised
        >>> record["studies"]["main"]["error"]  # doctest: +ELLIPSIS
        'image folder ... not found: pass --data-root DIR ...'
        >>> sorted(p.name for p in (folder / "out").iterdir())
        ['main', 'run.json', 'suite.yaml', 'summary.md']
    """
    say = echo or (lambda _msg: None)
    out = Path(out_dir)
    chosen = list(studies) if studies else list(suite["studies"])
    for name in chosen:
        if name not in suite["studies"]:
            hint = did_you_mean(name, suite["studies"])
            raise ConfigError(
                f"suite '{suite['name']}' has no study '{name}'{hint}; its studies: "
                f"{', '.join(suite['studies'])}"
            )
    runtime = {
        "data_root": data_root,
        "download": download,
        "cache_dir": cache_dir,
        "device": device,
        "progress": progress,
    }
    resolved_device = str(resolve_device(device or suite["experiment"].get("device", "auto")))
    if (out / "run.json").exists() and not overwrite:
        raise OutputError(
            f"{out} already holds a suite run; pass --overwrite to replace it or choose "
            "another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "suite.yaml", yaml.safe_dump(suite, sort_keys=False))
    record: dict[str, Any] = {
        "suite": suite["name"],
        "command": command,
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": _machine(resolved_device),
        "studies": {},
    }
    start_all = time.perf_counter()
    for name in chosen:
        record["studies"][name] = _study_entry(suite, name, runtime, out, say)
        record["seconds"] = time.perf_counter() - start_all
        _write_record(suite, record, out)  # after every study: an interrupted run keeps them
    record["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    _write_record(suite, record, out)
    return record


def _study_entry(
    suite: dict[str, Any], name: str, runtime: dict[str, Any], out: Path, say: Echo
) -> dict[str, Any]:
    """Run one study (its registered methods) and return its entry in the run record:
    folder, skipped methods, report or error, seconds. A failure is recorded, not raised."""
    study = suite["studies"][name]
    registered = set(list_methods())
    skipped = {m: _skip_reason(m, registered) for m in study["methods"]}
    skipped = {m: why for m, why in skipped.items() if why}
    methods = [m for m in study["methods"] if m not in skipped]
    entry: dict[str, Any] = {"folder": name, "skipped_methods": skipped}
    say(f"== {name}: {study.get('title', name)}")
    for method, why in skipped.items():
        say(f"   skipped {method}: {why}")
    start = time.perf_counter()
    try:
        entry["report"] = _run_study(suite, study, name, methods, runtime, out / name, say)
    except UnlearningError as exc:
        entry["error"] = str(exc)
        say(f"   FAILED: {exc}")
    except Exception as exc:  # a bug in one study must not lose the others' results
        entry["error"] = f"{type(exc).__name__}: {exc} (traceback in {name}/error.txt)"
        atomic_write_text(out / name / "error.txt", traceback.format_exc())
        say(f"   FAILED: {entry['error']}")
    entry["seconds"] = time.perf_counter() - start
    say(f"   {entry['seconds']:.1f} s")
    return entry


def _write_record(suite: dict[str, Any], record: dict[str, Any], out: Path) -> None:
    atomic_write_text(out / "summary.md", format_summary(suite, record, out))
    slim = copy.deepcopy(record)
    for entry in slim["studies"].values():
        entry.pop("report", None)
    atomic_write_json(out / "run.json", slim)


def _skip_reason(method: str, registered: set[str]) -> str | None:
    """Why ``method`` cannot run in a suite here, or None when it can.

    Args:
        method: a method name from a study's ``methods``.
        registered: the names of the registered methods.

    Returns:
        ``"not registered in this build"`` for an unknown method, else None.

    Example:
        >>> _skip_reason("ghost", {"finetune"}), _skip_reason("finetune", {"finetune"})
        ('not registered in this build', None)
    """
    return None if method in registered else "not registered in this build"


# A sweep's working folder inside its study folder: run_experiment's stages, so the original
# and retrained models' metrics are computed once per sweep, not once per setting.
SWEEP_WORK = "_work"


def _run_study(
    suite: dict[str, Any],
    study: dict[str, Any],
    name: str,
    methods: list[str],
    runtime: dict[str, Any],
    folder: Path,
    say: Echo,
) -> dict[str, Any]:
    if not methods:
        raise ConfigError(f"study '{name}': none of its methods is registered")
    seeds = [int(s) for s in study.get("seeds") or [suite["experiment"].get("seed", 0)]]
    vary = study.get("vary") or {}
    if not vary:
        settings = _settings(suite, study, methods, {}, runtime)
        return _run_seeds(settings, seeds, folder, lambda msg: say(f"   {msg}"))
    shutil.rmtree(folder / SWEEP_WORK, ignore_errors=True)  # stages of an earlier run
    variants = []
    for assignment in _variants(vary):
        settings = _settings(suite, study, methods, assignment, runtime)
        settings["figures"] = False  # a sweep's settings get tables, not figures
        report = _run_seeds(settings, seeds, folder / SWEEP_WORK, None, shared=True)
        sub = folder / _folder_name(assignment)
        write_reports(report, sub)
        variants.append({"setting": assignment, "folder": sub.name, "report": report})
        summary = ", ".join(
            f"{m} D_f {100 * report['results'][m]['acc']['forget']:.1f}%"
            for m in methods
            if m in report["results"]
        )
        say(f"   {_label(assignment)}: {summary}")
    combined = {"study": name, "title": study.get("title", name), "vary": vary,
                "variants": variants}  # fmt: skip
    atomic_write_json(folder / "report.json", combined)
    return combined

"""``bunlearn reproduce``: run a whole suite of the paper's studies from one YAML file.

A suite (``configs/<name>.yaml`` in this package, or any file of the same form) names the
shared experiment settings, every method's hyperparameters (stated explicitly, with the
reason), and a list of studies: the main table, the "fewer forgetting samples" study, the
combination study, the neighbour-search step study and BatchNorm train vs. freeze (Chen et
al., "Boundary Unlearning", CVPR 2023, and its slides). Each study runs through
:func:`~boundary_unlearning.experiment.run_experiment`, so trained originals and retrained
models are cached by their settings and shared between studies.

Output: ``OUT/<study>/report.json`` (+ ``report.md``; one sub-folder per setting of a sweep),
``OUT/summary.md`` collecting every study's table with the paper's published number beside
each cell of the main table, ``OUT/suite.yaml`` (the resolved suite) and ``OUT/run.json``
(command, date, machine, seconds per study).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import itertools
import math
import os
import platform
import shutil
import time
import traceback
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml

from ._utils import atomic_write_json, atomic_write_text
from .errors import ConfigError, OutputError, UnlearningError, did_you_mean
from .experiment import ExperimentConfig, resolve_device, run_experiment
from .methods import list_methods
from .report import format_markdown

__all__ = [
    "PUBLISHED",
    "apply_overrides",
    "format_summary",
    "list_suites",
    "load_suite",
    "run_suite",
    "suite_path",
]

Echo = Callable[[str], None]

# The paper's published accuracies (percent; from the authors' slides, see docs/paper.md).
# Keys: report accuracy keys (retain = D_r, forget = D_f, test_retain = D_tr, test_forget = D_tf).
_ACC_KEYS = ("retain", "forget", "test_retain", "test_forget")


def _row(*values: float) -> dict[str, float]:
    return dict(zip(_ACC_KEYS, values, strict=True))


PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    "cifar10": {
        "original": _row(99.97, 99.92, 84.83, 81.20),
        "retrain": _row(100.00, 0.00, 85.74, 0.00),
        "finetune": _row(100.00, 0.22, 86.50, 0.10),
        "neg_grad": _row(97.16, 7.84, 80.42, 6.50),
        "random_labels": _row(98.49, 10.40, 81.81, 7.50),
        "amnesiac": _row(95.79, 0.00, 81.50, 0.00),
        "fisher": _row(61.62, 1.80, 54.20, 1.60),
        "boundary_shrink": _row(99.24, 5.94, 83.13, 5.94),
        "boundary_expanding": _row(98.03, 8.96, 81.07, 7.00),
    },
    "vggface2": {
        "original": _row(99.94, 98.57, 98.87, 97.14),
        "retrain": _row(100.00, 0.00, 99.06, 0.00),
        "finetune": _row(99.52, 0.00, 99.96, 5.52),
        "neg_grad": _row(96.57, 2.85, 99.58, 7.26),
        "random_labels": _row(98.89, 4.29, 95.14, 2.86),
        "boundary_shrink": _row(98.57, 1.54, 99.72, 0.87),
        "boundary_expanding": _row(98.20, 4.22, 97.12, 1.41),
    },
}
PUBLISHED_NAMES = {"cifar10": "CIFAR-10, All-CNN", "vggface2": "VGGFace2, ResNet-50"}

_SUITE_KEYS = {
    "name": "the suite's name",
    "description": "what the suite reproduces",
    "paper": "cifar10 / vggface2 / null: published numbers shown beside the main table",
    "paper_note": "how to read the comparison with the published numbers",
    "experiment": "ExperimentConfig settings shared by every study",
    "hyperparameters": "every method's hyperparameters",
    "studies": "name -> study",
    "quick": "a partial suite merged over this one by --quick",
}
_STUDY_KEYS = {
    "title": "heading in summary.md",
    "description": "what the study shows",
    "methods": "methods to run (unregistered ones are skipped and listed)",
    "seeds": "experiment seeds; more than one gives mean ± std",
    "vary": "sweep: KEY -> list of values (grid over all keys)",
    "experiment": "ExperimentConfig settings for this study only",
    "hyperparameters": "method hyperparameters for this study only",
    "compare_paper": "show the published numbers beside this study's table",
}


# ----------------------------------------------------------------------------- loading
def _configs_dir() -> Path:
    return Path(str(resources.files("boundary_unlearning") / "configs"))


def list_suites() -> list[str]:
    """Names of the suites shipped with the package."""
    return sorted(p.stem for p in _configs_dir().glob("*.yaml"))


def suite_path(name_or_path: str | Path) -> Path:
    """The YAML file of a shipped suite (by name) or a path to one."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} or path.is_file():
        if not path.is_file():
            raise ConfigError(f"suite file {path} not found; pass a YAML file or a suite name")
        return path
    shipped = _configs_dir() / f"{name_or_path}.yaml"
    if not shipped.is_file():
        known = list_suites()
        raise ConfigError(
            f"unknown suite '{name_or_path}'{did_you_mean(str(name_or_path), known)}; "
            f"shipped suites: {', '.join(known)} (or pass a path to a suite YAML file)"
        )
    return shipped


def _merge(base: Any, over: Any) -> Any:
    """Deep merge of mappings; anything else in ``over`` replaces ``base``."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge(base.get(key), value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(over)


def apply_overrides(suite: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted paths, e.g. ``{"experiment.epochs": 1, "studies.main.seeds": [0]}``."""
    out = copy.deepcopy(suite)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if parts[0] not in _SUITE_KEYS:
            raise ConfigError(
                f"--set {dotted}: the path must start with one of {', '.join(_SUITE_KEYS)}, "
                "e.g. experiment.epochs=5 or hyperparameters.boundary_shrink.eps=0.1"
            )
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {dotted}: '{part}' is not a mapping in the suite")
            node = child
        node[parts[-1]] = value
    return out


def _check_keys(where: str, values: Any, allowed: dict[str, str]) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(values).__name__}")
    unknown = [k for k in values if k not in allowed]
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(map(str, unknown))} in {where}; valid keys: "
            f"{', '.join(allowed)}"
        )


def _validate(suite: dict[str, Any], source: str) -> dict[str, Any]:
    _check_keys(f"suite {source}", suite, _SUITE_KEYS)
    experiment = suite.setdefault("experiment", {})
    fields = {f.name: f.name for f in dataclasses.fields(ExperimentConfig)}
    _check_keys(f"{source}: experiment", experiment, fields)
    for reserved in ("methods", "hyperparameters"):
        if reserved in experiment:
            raise ConfigError(
                f"{source}: set '{reserved}' per study or at the top level, not under experiment"
            )
    hparams = suite.setdefault("hyperparameters", {})
    _check_keys(f"{source}: hyperparameters", hparams, {k: k for k in hparams})
    studies = suite.get("studies")
    if not isinstance(studies, dict) or not studies:
        raise ConfigError(f"{source} has no studies; add a 'studies:' mapping")
    for name, study in studies.items():
        _check_keys(f"{source}: study '{name}'", study, _STUDY_KEYS)
        if not study.get("methods"):
            raise ConfigError(f"{source}: study '{name}' lists no methods")
        _check_keys(f"{source}: study '{name}' experiment", study.get("experiment", {}), fields)
        for key, values in study.get("vary", {}).items():
            if not isinstance(values, list) or not values:
                raise ConfigError(
                    f"{source}: study '{name}' vary.{key} must be a non-empty list of values"
                )
            if "." not in key and key not in fields:
                raise ConfigError(
                    f"{source}: study '{name}' varies '{key}', which is neither an experiment "
                    "setting nor METHOD.NAME / *.NAME (a hyperparameter)"
                )
    return suite


def load_suite(
    name_or_path: str | Path,
    *,
    quick: bool = False,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Read a suite, merge its ``quick`` part when asked, apply ``overrides``, validate."""
    path = suite_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({exc}); fix the file") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping with 'experiment' and 'studies'")
    suite = dict(raw)
    quick_part = suite.pop("quick", None) or {}
    if quick:
        suite = _merge(suite, quick_part)
    suite = apply_overrides(suite, overrides or {})
    suite.setdefault("name", path.stem)
    return _validate(suite, str(path))


# ----------------------------------------------------------------------------- running
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


def _write_report(report: dict[str, Any], out: Path) -> None:
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", format_markdown(report))


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
    registered = set(list_methods())
    record: dict[str, Any] = {
        "suite": suite["name"],
        "command": command,
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": _machine(resolved_device),
        "studies": {},
    }
    start_all = time.perf_counter()
    for name in chosen:
        study = suite["studies"][name]
        skipped = {m: _skip_reason(m, registered) for m in study["methods"]}
        skipped = {m: why for m, why in skipped.items() if why}
        methods = [m for m in study["methods"] if m not in skipped]
        entry: dict[str, Any] = {"folder": name, "skipped_methods": skipped}
        record["studies"][name] = entry
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
        record["seconds"] = time.perf_counter() - start_all
        _write_record(suite, record, out)  # after every study: an interrupted run keeps them
    record["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    _write_record(suite, record, out)
    return record


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
        _write_report(report, sub)
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


# ----------------------------------------------------------------------------- summary
def _num(value: Any, std: Any = None, *, scale: float = 100.0, digits: int = 2) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return "—"
    text = f"{scale * value:.{digits}f}"
    if isinstance(std, (int, float)) and not isinstance(std, bool) and not math.isnan(std):
        text += f" ± {scale * std:.{digits}f}"
    return text


def _get(node: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _columns(report: dict[str, Any]) -> list[str]:
    results = report["results"]
    first = [c for c in ("original", "retrain") if c in results]
    return first + [c for c in results if c not in first]


# (path in a model's entry, label, scale of the printed value, decimals)
_MAIN_ROWS: tuple[tuple[tuple[str, ...], str, float, int], ...] = (
    (("acc", "retain"), "D_r acc % ↑", 100.0, 2),
    (("acc", "forget"), "D_f acc % (→ retrain)", 100.0, 2),
    (("acc", "test_retain"), "D_tr acc % ↑", 100.0, 2),
    (("acc", "test_forget"), "D_tf acc % (→ retrain)", 100.0, 2),
    (("mia", "paper_asr"), "MIA paper ASR on D_f % (→ retrain)", 100.0, 2),
    (("mia", "confidence_svc"), "MIA-efficacy (conf. SVC) % (→ retrain)", 100.0, 2),
    (("mia", "loss_lr"), "MIA loss-LR accuracy % (→ 50)", 100.0, 2),
    (("mia", "entropy"), "MIA entropy attack % (→ retrain)", 100.0, 2),
    (("js_to_retrain",), "JS divergence to retrain on D_f ↓", 1.0, 4),
    (("activation_distance",), "activation distance to retrain ↓", 1.0, 4),
    (("relearn_steps",), "relearn steps (↑ = truly forgotten)", 1.0, 0),
    (("seconds",), "time (s) ↓", 1.0, 2),
    (("speedup",), "speed-up over retrain ↑", 1.0, 1),
)


def _spread(report: dict[str, Any]) -> dict[str, Any]:
    """The report's per-model standard deviations, or nothing for a single seed."""
    return report.get("std", {}) if len(report.get("seeds") or [0]) > 1 else {}


def _main_table(report: dict[str, Any], paper: str | None) -> list[str]:
    cols = _columns(report)
    results = report["results"]
    spread = _spread(report)
    published = PUBLISHED.get(paper or "", {})
    lines = ["| metric | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for path, label, scale, digits in _MAIN_ROWS:
        values = [_get(results[c], path) for c in cols]
        if all(v is None for v in values):
            continue
        cells = [
            "failed" if "failed" in results[c] else
            _num(v, _get(spread.get(c), path), scale=scale, digits=digits)
            for c, v in zip(cols, values, strict=True)
        ]  # fmt: skip
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        if published and path[0] == "acc":
            ref = [f"{published[c][path[1]]:.2f}" if c in published else "" for c in cols]
            lines.append(f"| *paper, {PUBLISHED_NAMES[paper or '']}* | " + " | ".join(ref) + " |")
    return lines


def _sweep_table(study_report: dict[str, Any]) -> list[str]:
    keys = [k.split(".")[-1] for k in study_report["vary"]]
    head = [*keys, "model", "D_r", "D_f", "D_tr", "D_tf", "MIA ASR", "time (s)", "notes"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "---|" * (len(keys) + 1) + "---:|" * 6 + "---|"]  # fmt: skip
    variants = study_report["variants"]

    def refs(report: dict[str, Any]) -> list[Any]:
        return [report["results"].get(c, {}).get("acc") for c in ("original", "retrain")]

    same_refs = all(refs(v["report"]) == refs(variants[0]["report"]) for v in variants)

    def row(cells: list[str], report: dict[str, Any], name: str) -> str:
        entry = report["results"][name]
        std = _spread(report).get(name)
        if "failed" in entry:
            return (
                "| " + " | ".join([*cells, name, *["—"] * 6, f"failed: {entry['failed']}"]) + " |"
            )
        values = [_num(_get(entry, ("acc", k)), _get(std, ("acc", k))) for k in _ACC_KEYS]
        values.append(_num(_get(entry, ("mia", "paper_asr")), _get(std, ("mia", "paper_asr"))))
        values.append(_num(entry.get("seconds"), _get(std, ("seconds",)), scale=1.0))
        notes = ", ".join(
            f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in (entry.get("stats") or {}).items()
        )
        return "| " + " | ".join([*cells, name, *values, notes]) + " |"

    for variant in variants:
        report = variant["report"]
        cells = [str(v) for v in variant["setting"].values()]
        names = _columns(report)
        if same_refs:
            names = [c for c in names if c not in {"original", "retrain"}]
        lines += [row(cells, report, n) for n in names]
    if same_refs and variants:
        first = variants[0]["report"]
        lines += [row(["(all)"] * len(keys), first, n) for n in ("original", "retrain")
                  if n in first["results"]]  # fmt: skip
    return lines


def format_summary(
    suite: dict[str, Any], record: dict[str, Any], out_dir: Path | None = None
) -> str:
    """``summary.md``: how the suite was run, then every study's table (and the figures
    found under ``out_dir/<study>/figures``)."""
    machine = record["machine"]
    where = machine.get("gpu") or f"{machine['processor']}, {machine['cpu_count']} cores"
    out = [
        f"# Suite `{suite['name']}`",
        "",
        str(suite.get("description", "")).strip(),
        "",
        f"- command: `{record.get('command') or 'run_suite(...)'}`",
        f"- started {record['started']}, finished {record.get('finished', '(still running)')}, "
        f"{record.get('seconds', math.nan):.0f} s in all",
        f"- machine: {where} ({machine['platform']}; torch {machine['torch']}, "
        f"device {machine['device']}, {machine['torch_threads']} torch threads)",
        "- mean ± std (sample) where a study ran several seeds. Arrows: ↑ higher is better, "
        "↓ lower is better, (→ retrain) the retrained model's value is the target.",
    ]
    if suite.get("paper"):
        note = str(suite.get("paper_note", "")).strip()
        out.append(
            f"- *paper* rows: the published numbers for {PUBLISHED_NAMES[suite['paper']]} "
            f"(Chen et al., CVPR 2023). {note}"
        )
    for name, entry in record["studies"].items():
        study = suite["studies"][name]
        out += ["", f"## {study.get('title', name)} (`{name}/`)", ""]
        if study.get("description"):
            out += [str(study["description"]).strip(), ""]
        seeds = study.get("seeds") or [suite["experiment"].get("seed", 0)]
        out.append(f"Seeds {seeds}; {entry.get('seconds', math.nan):.1f} s.")
        for method, why in (entry.get("skipped_methods") or {}).items():
            out.append(f"Skipped {method}: {why}.")
        if "error" in entry:
            out += ["", f"**Failed:** {entry['error']}"]
            continue
        report = entry.get("report")
        if report is None:
            continue
        out.append("")
        if "variants" in report:
            out += _sweep_table(report)
            continue
        paper = suite.get("paper") if study.get("compare_paper") else None
        out += _main_table(report, paper)
        for method, values in report["results"].items():
            if values.get("stats"):
                text = ", ".join(
                    f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in values["stats"].items()
                )
                out.append(f"\n{method}: {text}")
        if out_dir is not None:
            figures = sorted((out_dir / name / "figures").glob("*.png"))
            for fig in figures:
                if fig.stem.startswith(("entropy", "tsne")):
                    out.append(f"\n![{fig.stem}]({name}/figures/{fig.name})")
    return "\n".join(out) + "\n"

"""Benchmark: one unlearning request end to end, stage by stage (issue 22).

Times ``bunlearn unlearn`` on full Fashion-MNIST (zoo ``cnn``, trained 3 epochs and kept in
the cache; forget class 3 "dress", Boundary Shrink with its defaults) the way a user runs
it, each request in a fresh process:

    python benchmarks/bench_request.py --quick --json out.json

Per request: wall clock minus the Python import, seconds by stage (data load, model load,
method, evaluation, report), the method's own seconds, peak resident memory (``ru_maxrss``
of the request's process) and the accuracies with their intervals. Requests:

- ``cold``: the defaults, with an empty evidence cache (the original is evaluated);
- ``warm``: the defaults again (the original's evidence comes from the cache);
- ``full``: ``--full-eval`` (every set, every image): the sampled accuracies of ``warm``
  must fall within their printed interval of these (checked, ``agree``).

Without ``--quick`` a ``bunlearn run --dataset fashion-mnist`` (Boundary Shrink, originals
trained ``--run-epochs``, no figures) is timed stage by stage too, twice: ``first`` trains
the original and the retrained model (or reuses them from the cache), ``again`` reuses them.
Stages are measured by wrapping the library's functions that do them (``commands``,
``experiment``), so the same script times an older checkout (``--src DIR``) for a before/after table
(docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
STAGES = {  # stage -> the functions of boundary_unlearning.commands it is made of
    "data load": ("load_data", "split_data"),
    "model load": ("_load_model",),
    "method": ("timed_unlearn",),
    "evaluation": ("_unlearn_report",),
    "report": ("save_checkpoint", "write_reports"),
}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(
    seconds: dict[str, float], peaks: dict[str, float], stage: str, fn: Callable[..., Any]
) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - start
            peaks[stage] = _peak_mb()  # the process's peak so far, at the stage's end

    return wrapper


RUN_STAGES = {  # stage -> (module, function) of a `bunlearn run` (metrics holds the next four)
    "data load": ("experiment", "prepare_data"),
    "original (train or cache)": ("experiment", "train_original"),
    "retrain (train or cache)": ("experiment", "train_retrained"),
    "method": ("experiment", "timed_unlearn"),
    "metrics": ("experiment", "compute_metrics"),
    "  inference (4 sets)": ("metrics.suite", "_outputs"),
    "  attacks": ("metrics.suite", "paper_asr confidence_svc loss_lr entropy_attack"),
    "  relearn steps": ("metrics.suite", "relearn_steps"),
    "  feature probe": ("metrics.suite", "probe_forget_accuracy"),
    "figures": ("experiment", "figure_data"),
    "report": ("experiment", "render_reports"),
}


def child_run(argv: list[str]) -> dict[str, Any]:
    """One ``bunlearn run`` in this process, timed stage by stage."""
    import importlib

    start = time.perf_counter()
    from boundary_unlearning.cli import main

    imported = time.perf_counter()
    seconds: dict[str, float] = {}
    peaks: dict[str, float] = {"import": _peak_mb()}
    for stage, (module_name, names) in RUN_STAGES.items():
        module = importlib.import_module(f"boundary_unlearning.{module_name}")
        for name in names.split():
            if hasattr(module, name):
                setattr(module, name, _timed(seconds, peaks, stage, getattr(module, name)))
    code = main(["run", *argv])
    return {
        "exit_code": code,
        "import_s": imported - start,
        "wall_minus_import_s": time.perf_counter() - imported,
        "stages_s": {k: round(v, 2) for k, v in seconds.items()},
        "peak_rss_mb": _peak_mb(),
        "peak_rss_mb_by_stage_end": {k: round(v) for k, v in peaks.items()},
    }


def child(argv: list[str]) -> dict[str, Any]:
    """One request in this process: ``argv`` as ``bunlearn unlearn`` takes it."""
    start = time.perf_counter()
    from boundary_unlearning import commands
    from boundary_unlearning.cli import main

    imported = time.perf_counter()
    seconds: dict[str, float] = {}
    peaks: dict[str, float] = {"import": _peak_mb()}
    for stage, names in STAGES.items():
        for name in names:
            setattr(commands, name, _timed(seconds, peaks, stage, getattr(commands, name)))
    code = main(["unlearn", *argv])
    end = time.perf_counter()
    report = json.loads((Path(argv[argv.index("--out") + 1]) / "report.json").read_text())
    return {
        "exit_code": code,
        "import_s": imported - start,
        "wall_minus_import_s": end - imported,
        "stages_s": seconds,
        "peak_rss_mb": _peak_mb(),
        "peak_rss_mb_by_stage_end": peaks,
        "report": report,
    }


def _request(
    src: Path, argv: list[str], env: dict[str, str], mode: str = "--child"
) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), mode, *argv]
    proc = subprocess.run(
        cmd, env={**env, "PYTHONPATH": str(src)}, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"request failed ({' '.join(argv)}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _train(src: Path, out: Path, env: dict[str, str]) -> None:
    if (out / "model.safetensors").is_file():
        return
    cmd = [sys.executable, "-m", "boundary_unlearning", "train", "--dataset", "fashion-mnist",
           "--model", "cnn", "--epochs", "3", "--out", str(out), "--quiet"]  # fmt: skip
    subprocess.run(cmd, env={**env, "PYTHONPATH": str(src)}, check=True)


def agreement(sampled: dict[str, Any], full: dict[str, Any], method: str) -> dict[str, Any]:
    """Each accuracy of ``sampled`` against ``full`` (every image): inside the interval
    ``sampled`` printed? (``None`` where a report has no interval: an older checkout.)

    Example:
        >>> s = {"results": {"m": {"acc": {"retain": 0.9},
        ...                        "acc_interval": {"retain": [0.89, 0.91]}}}}
        >>> f = {"results": {"m": {"acc": {"retain": 0.905}}}}
        >>> agreement(s, f, "m")["retain"]["inside"]
        True
    """
    out: dict[str, Any] = {}
    for model in (method, "original"):
        entry, exact = sampled["results"].get(model, {}), full["results"].get(model, {})
        intervals = entry.get("acc_interval") or {}
        for key, value in (entry.get("acc") or {}).items():
            truth = (exact.get("acc") or {}).get(key)
            low_high = intervals.get(key)
            inside = None
            if low_high is not None and truth is not None:
                inside = low_high[0] - 1e-12 <= truth <= low_high[1] + 1e-12
            name = key if model == method else f"original.{key}"
            out[name] = {"sampled": value, "full": truth, "interval": low_high, "inside": inside}
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in {"--child", "--child-run"}:
        run = child if sys.argv[1] == "--child" else child_run
        print(json.dumps(run(sys.argv[2:])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the unlearn requests only")
    parser.add_argument(
        "--run-epochs", type=int, default=3, help="epochs of the timed run's original/retrain"
    )
    parser.add_argument("--only-run", action="store_true", help="time the run alone")
    parser.add_argument("--json", nargs="?", const="-", help="write results as JSON (- = stdout)")
    parser.add_argument("--src", default=str(HERE.parent / "src"), help="the code to time")
    parser.add_argument("--work", default=None, help="folder for the checkpoint and outputs")
    parser.add_argument("--method", default="boundary_shrink")
    parser.add_argument("--forget-class", default="dress")
    args = parser.parse_args()
    src = Path(args.src).resolve()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-request-"))
    cache = work / "cache"
    env = {**os.environ, "BUNLEARN_CACHE": str(cache), "BUNLEARN_PROGRESS": "lines"}
    _train(src, work / "original", env)
    for evidence in (cache / "evidence",):  # cold: no evidence of the original yet
        for path in evidence.glob("*") if evidence.is_dir() else ():
            path.unlink()
    base = ["--checkpoint", str(work / "original"), "--forget-class", args.forget_class,
            "--method", args.method, "--quiet", "--overwrite"]  # fmt: skip
    runs: dict[str, Any] = {}
    kinds = () if args.only_run else (("cold", []), ("warm", []), ("full", ["--full-eval"]))
    for name, extra in kinds:
        if name == "full" and "--full-eval" not in _help(src, env):
            extra = []  # an older checkout: every set is evaluated in full anyway
        runs[name] = _request(src, [*base, "--out", str(work / name), *extra], env)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "src": str(src),
        "requests": {k: _summary(v, args.method) for k, v in runs.items()},
        "agreement": {}
        if args.only_run
        else agreement(runs["warm"]["report"], runs["full"]["report"], args.method),
    }
    if not args.quick:
        run_argv = ["--dataset", "fashion-mnist", "--model", "cnn", "--forget-class",
                    args.forget_class, "--methods", args.method, "--epochs",
                    str(args.run_epochs), "--no-figures", "--quiet", "--overwrite"]  # fmt: skip
        result["run"] = {
            name: _request(
                src, [*run_argv, "--out", str(work / f"run-{name}")], env, mode="--child-run"
            )
            for name in ("first", "again")  # first: trains (or reuses) the originals
        }
    _print(result)
    if args.json:
        text = json.dumps(result, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")


def _help(src: Path, env: dict[str, str]) -> str:
    cmd = [sys.executable, "-m", "boundary_unlearning", "unlearn", "--help"]
    env = {**env, "PYTHONPATH": str(src)}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=False).stdout


def _summary(run: dict[str, Any], method: str) -> dict[str, Any]:
    entry = run["report"]["results"][method]
    method_s = entry["seconds"]
    return {
        "wall_minus_import_s": round(run["wall_minus_import_s"], 2),
        "import_s": round(run["import_s"], 2),
        "method_s": round(method_s, 2),
        "ratio_to_method": round(run["wall_minus_import_s"] / method_s, 2),
        "stages_s": {k: round(v, 2) for k, v in run["stages_s"].items()},
        "peak_rss_mb": round(run["peak_rss_mb"]),
        "peak_rss_mb_by_stage_end": {
            k: round(v) for k, v in run["peak_rss_mb_by_stage_end"].items()
        },
        "acc": entry["acc"],
        "acc_interval": entry.get("acc_interval"),
        "evidence": run["report"].get("evidence"),
    }


def _print(result: dict[str, Any]) -> None:
    print(f"{'request':8} {'wall-import':>11} {'method':>7} {'ratio':>6} {'peak MB':>8}  stages")
    for name, run in result["requests"].items():
        stages = ", ".join(f"{k} {v:.1f}" for k, v in run["stages_s"].items())
        print(f"{name:8} {run['wall_minus_import_s']:>10.1f}s {run['method_s']:>6.1f}s "
              f"{run['ratio_to_method']:>5.1f}x {run['peak_rss_mb']:>8}  {stages}")  # fmt: skip
        peaks = ", ".join(f"{k} {v}" for k, v in run["peak_rss_mb_by_stage_end"].items())
        print(f"{'':8} peak MB at the end of: {peaks}")
    for name, run in (result.get("run") or {}).items():
        print(f"run ({name}): {run['wall_minus_import_s']:.1f} s, peak {run['peak_rss_mb']:.0f} MB")
        peaks = run.get("peak_rss_mb_by_stage_end", {})
        for stage, value in run["stages_s"].items():
            print(f"  {stage:28} {value:8.2f} s   peak at its end {peaks.get(stage, '?')} MB")
    for key, row in result["agreement"].items():
        print(f"  {key:24} sampled {row['sampled']} full {row['full']} "
              f"interval {row['interval']} inside {row['inside']}")  # fmt: skip


if __name__ == "__main__":
    main()

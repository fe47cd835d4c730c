"""``bunlearn``: the command line. It parses arguments and calls the library, nothing more."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from .cli_parser import build_parser
from .distributed import is_main_process, launch, launched_by_torchrun, process_group
from .errors import ConfigError, HyperparameterError, OutputError, UnlearningError


def _parse_value(text: str) -> Any:
    """``--set`` values: ints, floats (``1e-3`` too), true/false, none, YAML lists, else text."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    lowered = text.strip().lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    if lowered in {"none", "null"}:
        return None
    if text.strip().startswith(("[", "{")):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text
    return text


def _parse_sets(items: Sequence[str], scoped: bool) -> dict[str, Any]:
    """``--set k=v`` (or ``method.k=v`` when ``scoped``) into a (nested) dict."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            form = "method.name=value" if scoped else "name=value"
            raise HyperparameterError(f"--set {item!r} is not of the form {form}")
        if scoped:
            method, dot, name = key.partition(".")
            if not dot or not name:
                raise HyperparameterError(
                    f"--set {item!r} must name its method, e.g. boundary_shrink.lr=1e-4"
                )
            out.setdefault(method, {})[name] = _parse_value(value)
        else:
            out[key] = _parse_value(value)
    return out


def _floats(flag: str, text: str | None) -> list[float] | None:
    """``"0.5"`` or ``"0.49,0.48,0.45"`` as a list of floats (one per channel)."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise ConfigError(
            f"{flag} {text!r} is not a number or comma-separated numbers (one per channel), "
            "e.g. 0.286 or 0.49,0.48,0.45"
        )
    return values


def _given(args: argparse.Namespace, flags: str, **renamed: Any) -> dict[str, Any]:
    """The ``ExperimentConfig`` fields the user gave: the ``flags`` (space-separated argparse
    destinations that are field names), ``renamed`` fields (value, or ``None``: not given),
    and ``mean``/``std`` where the command has them."""
    values = {name: getattr(args, name) for name in flags.split()}
    if hasattr(args, "mean"):
        values.update(mean=_floats("--mean", args.mean), std=_floats("--std", args.std))
    return {k: v for k, v in {**values, **renamed}.items() if v is not None}


def _echo(quiet: bool) -> Any:
    return None if quiet else (lambda msg: print(msg, flush=True))


def _cmd_demo(args: argparse.Namespace) -> int:
    from .config import ExperimentConfig
    from .experiment import run_experiment
    from .output_dir import resume_changes

    config = ExperimentConfig(**demo_settings(args))
    # The demo's folder is its own: a second demo with the same settings continues it
    # (finished stages are reused, so it is instant); other settings would replace its
    # results, which needs --overwrite (or another --out).
    changed = [] if args.overwrite else resume_changes(config, Path(args.out))
    if changed:
        raise OutputError(
            f"{args.out} already holds a demo run with other settings ({'; '.join(changed)}); "
            "pass --overwrite to replace it, or choose another --out"
        )
    report = run_experiment(
        config,
        args.out,
        echo=_echo(args.quiet),
        resume=not args.overwrite,
        overwrite=args.overwrite,
    )
    _print_failures(report)
    if not args.quiet:
        print(f"\n{_written(Path(args.out))}")
    return 0


def _written(out: Path) -> str:
    """The final line of a run: the folder and every report file it holds."""
    names = ["report.json", "report.md", "report.html", "results.csv", "config.yaml"]
    found = [n for n in names if (out / n).is_file()]
    if (out / "figures").is_dir():
        found.append("figures/")
    return f"reports written to {out}: {', '.join(found)}"


def demo_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {  # the methods run with the library's defaults
        "dataset": "digits",
        "model": "cnn",
        "forget_classes": [args.forget_class],
        "methods": ["boundary_shrink", "boundary_expanding"],
        "seed": args.seed,
        "epochs": 20,
        "data_root": args.data_root,
        "cache_dir": args.cache_dir,
        "device": args.device,
        "progress": not args.quiet,
    }


def _cmd_train(args: argparse.Namespace) -> int:
    from .commands import save_original
    from .config import ExperimentConfig

    flags = "dataset model epochs lr batch_size weight_decay optimizer seed data_root download "
    flags += "cache_dir device record_updates subset"
    config = ExperimentConfig(**_given(args, flags, progress=not args.quiet))
    meta, reused = save_original(config, args.out, overwrite=args.overwrite)
    if not args.quiet:
        verb = "reused" if reused else "trained"
        print(
            f"{verb} {meta['model']} on {meta['dataset']}: test accuracy "
            f"{100 * meta['test_accuracy']:.2f}% -> {Path(args.out) / 'model.safetensors'}"
        )
    return 0


def _cmd_unlearn(args: argparse.Namespace) -> int:
    from .commands import unlearn_checkpoint

    report = unlearn_checkpoint(
        checkpoint=args.checkpoint, method=args.method, out=args.out,
        given=unlearn_settings(args), overwrite=args.overwrite, full_eval=args.full_eval,
    )  # fmt: skip
    if not args.quiet:
        entry, before = report["results"][args.method], report["results"]["original"]
        print(
            f"{args.method}: forget accuracy {_percent(before['acc']['forget'])} -> "
            f"{_percent(entry['acc']['forget'])}, test-retain accuracy "
            f"{_percent(before['acc']['test_retain'])} -> {_percent(entry['acc']['test_retain'])}"
            f"; wrote {args.out}"
        )
        print(_evidence_line(report, args.method))
        print(_depth_line(report, args.method))
        for line in _class_lines(report, args.method):
            print(line)
    return 0


def _evidence_line(report: dict[str, Any], method: str) -> str:
    """How ``unlearn``'s accuracies were read: each set's interval and images read."""
    from .report.writers import coverage

    entry, evidence = report["results"][method], report.get("evidence") or {}
    names = {"retain": "D_r", "forget": "D_f", "test_retain": "D_tr", "test_forget": "D_tf"}
    parts = []
    for key, name in names.items():
        n, total = entry["acc_samples"][key], evidence["totals"][key]
        low, high = entry["acc_interval"][key] or (None, None)
        if n == total:
            parts.append(f"{name} all {total:,}")
        else:
            parts.append(f"{name} {_percent(low)}-{_percent(high)} from {n:,} of {total:,}")
    return f"evidence ({coverage(evidence)}, images read): {', '.join(parts)}"


def _class_lines(report: dict[str, Any], method: str) -> list[str]:
    """One line per forgotten class (this request's and earlier ones) with its verdict."""
    from .report.classes import class_verdict

    names = report.get("class_names_all") or {}
    lines = []
    for cls, row in (report["results"][method].get("per_class") or {}).items():
        when = "forgotten before" if row.get("earlier") else "this request"
        judged = class_verdict(report, method, cls)
        flag = "FAILED: the class came back" if judged == "failed" else judged
        lines.append(
            f"  class {cls} ({names.get(cls, cls)}, {when}): D_f {_percent(row.get('forget'))}, "
            f"D_tf {_percent(row.get('test_forget'))} still predicted as it; {flag}"
        )
    return lines


def _percent(value: float | None) -> str:
    """An accuracy as a percentage (``n/a`` for an empty set)."""
    return "n/a" if value is None else f"{100 * value:.2f}%"


def unlearn_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``ExperimentConfig`` fields the user gave as ``bunlearn unlearn`` flags (what is
    missing comes from the checkpoint)."""
    flags = "forget_fraction seed dataset model data_root download device"
    return _given(
        args, flags, forget_classes=args.forget_class, progress=not args.quiet,
        hyperparameters=_parse_sets(args.set, scoped=False),
    )  # fmt: skip


def _depth_line(report: dict[str, Any], method: str) -> str:
    """``unlearn``'s evidence below the outputs, beside the original's, and what it means."""
    entry, before = report["results"][method], report["results"]["original"]

    def pct(row: dict[str, Any]) -> str:  # the probe, ± its standard error over its draws
        value, se = row.get("probe_forget_acc"), row.get("probe_forget_acc_se")
        if value is None:
            return "—"
        return f"{100 * value:.1f}%" + ("" if se is None else f" ±{100 * se:.1f}")

    return (
        f"depth: relearn steps {before.get('relearn_steps')} -> {entry.get('relearn_steps')}, "
        f"few-shot probe on D_tf {pct(before)} -> "
        f"{pct(entry)} (more steps and a lower probe: the class left the "
        "features; how far a never-trained model would be needs a retrained reference, "
        "see report.md)"
    )


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``ExperimentConfig`` fields the user gave as ``bunlearn run`` flags."""
    flags = "dataset model forget_fraction seed epochs lr batch_size subset data_root download "
    flags += "cache_dir device ulira relearn probe figures full_eval"
    given = _given(args, flags, forget_classes=args.forget_class,
                   progress=False if args.quiet else None)  # fmt: skip
    if args.methods is not None:
        given["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.seeds is not None:
        try:
            given["seeds"] = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(
                f"--seeds {args.seeds!r} is not a comma-separated list of integers, e.g. 0,1,2"
            ) from None
    return given


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import ExperimentConfig, config_from_file
    from .experiment import run_experiment

    overrides = run_settings(args)
    if args.config:
        config = config_from_file(args.config, overrides)
    else:
        config = ExperimentConfig.from_dict(overrides)
    if args.seed is not None and args.seeds is None:
        config.seeds = None  # --seed on the command line replaces the file's seeds
    for method, values in _parse_sets(args.set, scoped=True).items():
        config.hyperparameters = {
            **config.hyperparameters,
            method: {**config.hyperparameters.get(method, {}), **values},
        }
    try:
        report = run_experiment(
            config, args.out, echo=_echo(bool(args.quiet)), resume=args.resume,
            overwrite=args.overwrite,
        )  # fmt: skip
    except KeyboardInterrupt:
        print(
            f"bunlearn: interrupted; finished stages are kept in {Path(args.out) / 'stages'}; "
            "rerun the same command with --resume to continue",
            file=sys.stderr,
        )
        return 130
    _print_failures(report)
    if not args.quiet:
        print(f"\n{_written(Path(args.out))}")
    return 0


def _print_failures(report: dict[str, Any]) -> None:
    """One warning line per failed method and seed (the run itself still succeeds: exit
    code 0; the report marks the failure)."""
    if not is_main_process():
        return
    per_seed = report.get("per_seed") or {str(report.get("seed")): report.get("results", {})}
    for seed, entries in per_seed.items():
        for name, entry in entries.items():
            if isinstance(entry, dict) and "failed" in entry:
                where = f" on seed {seed}" if len(per_seed) > 1 else ""
                message = f"bunlearn: warning: {name} failed{where}: {entry['failed']}"
                print(message, file=sys.stderr)


def _cmd_history(args: argparse.Namespace) -> int:
    from .history import format_history, read_history, verify_history

    if not args.verify:
        print("\n".join(format_history(read_history(args.checkpoint))))
        return 0
    check = verify_history(args.checkpoint, search=args.search, data_root=args.data_root)
    print("\n".join(format_history(read_history(args.checkpoint), check)))
    return 0 if check.holds else 1


def _cmd_report(args: argparse.Namespace) -> int:
    from .commands import rerender_reports

    rerender_reports(args.dir)
    if not args.quiet:
        print(f"re-rendered the reports in {args.dir} from its report.json")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import run_suite
    from .suites import list_suites, load_suite

    if args.list:
        for name in list_suites():
            print(name)
        return 0
    if not args.suite or not args.out:
        raise HyperparameterError("reproduce needs --suite NAME and --out DIR (or --list)")
    overrides = _parse_sets(args.set, False)
    if args.full_eval:  # every study reads every image (exact accuracies)
        overrides["experiment.full_eval"] = True
    suite = load_suite(args.suite, quick=args.quick, overrides=overrides)
    record = run_suite(
        suite,
        args.out,
        studies=[s.strip() for s in args.studies.split(",") if s.strip()] if args.studies else None,
        data_root=args.data_root,
        download=args.download or None,
        cache_dir=args.cache_dir,
        device=None if args.device == "auto" else args.device,
        progress=not args.quiet and sys.stderr.isatty(),  # bars on a terminal, not in logs
        overwrite=args.overwrite,
        command=" ".join(["bunlearn", *sys.argv[1:]]),
        echo=_echo(args.quiet),
    )
    failed = {k: v["error"] for k, v in record["studies"].items() if "error" in v}
    if not args.quiet:
        print(f"\nsummary: {Path(args.out) / 'summary.md'} ({record['seconds']:.0f} s)")
    for name, error in failed.items():
        print(f"bunlearn: study {name} failed: {error}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from .methods import list_methods

    for name in list_methods():
        print(name)
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import list_models

    for name in list_models():
        print(name)
    return 0


COMMANDS = {
    "demo": _cmd_demo,
    "train": _cmd_train,
    "unlearn": _cmd_unlearn,
    "run": _cmd_run,
    "report": _cmd_report,
    "history": _cmd_history,
    "methods": _cmd_methods,
    "models": _cmd_models,
    "reproduce": _cmd_reproduce,
}


def _without_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` less ``--nproc N`` (or ``--nproc=N``, or an abbreviation): the ranks run the
    rest, and torchrun's own parser would take ``--nproc`` for its ``--nproc-per-node``."""
    out: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token.startswith("--np") and "--nproc".startswith(token.split("=")[0]):
            skip = "=" not in token
        else:
            out.append(token)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bunlearn``; returns the exit code (2 for bad input)."""
    args = build_parser().parse_args(argv)
    try:
        nproc = getattr(args, "nproc", None)
        if nproc is not None and nproc != 1 and not launched_by_torchrun():
            code = launch(_without_nproc(sys.argv[1:] if argv is None else argv), nproc)
            if code != 0:
                failed = f"the {nproc}-process job failed (torchrun exit code {code})"
                print(f"bunlearn: error: {failed}; the failing rank's error is above",
                      file=sys.stderr)  # fmt: skip
            return code
        with process_group(getattr(args, "device", None)):  # joins torchrun's ranks, if any
            if not is_main_process():
                args.quiet = True  # rank 0 alone prints progress and results
            return COMMANDS[args.command](args)
    except UnlearningError as exc:
        print(f"bunlearn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bunlearn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

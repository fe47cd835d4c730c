"""``bunlearn``: the command line. It parses arguments and calls the library, nothing more."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from .distributed import is_main_process, launch, launched_by_torchrun, process_group
from .errors import ConfigError, HyperparameterError, OutputError, UnlearningError

DEMO_OUT = "bunlearn-demo"


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


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help="folder holding the data set files")
    p.add_argument("--download", action="store_true", help="fetch the data set (needs internet)")
    p.add_argument("--cache-dir", help="where trained originals/retrained models are cached")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--quiet", action="store_true", help="no progress bars or table")


def _add_normalization(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mean",
        metavar="M[,M,M]",
        help="with --model MODULE:FUNCTION: feed the model (x - mean) / std; a zoo "
        "model: the normalisation inside it (default: the data's statistics)",
    )
    p.add_argument("--std", metavar="S[,S,S]", help="see --mean")  # fmt: skip


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


def _add_nproc(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nproc", type=int, metavar="N",
                   help="data-parallel on N local processes via torchrun (one per GPU, or "
                        "CPU processes); see docs/distributed.md")  # fmt: skip


class _HelpFormatter(argparse.HelpFormatter):
    """``--help`` shows each option's default (unless its help already says it, or it has
    none worth showing: a flag, an empty list, None)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or "default" in text
            or default is None
            or default is False
            or default == []
            or default is argparse.SUPPRESS
        ):
            return text
        return f"{text} (default: %(default)s)".lstrip()


class _Parser(argparse.ArgumentParser):
    """Every sub-command's parser shows defaults in ``--help``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="bunlearn",
        description="Make a trained image classifier forget a whole class (Boundary Unlearning).",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        parser_class=_Parser,
    )

    demo = sub.add_parser("demo", help="forget digit 3 with both Boundary Unlearning methods")
    demo.add_argument("--out", default=DEMO_OUT, help=f"output folder (default {DEMO_OUT})")
    demo.add_argument("--forget-class", default="3", help="class to forget (default 3)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the split and the training")
    demo.add_argument("--overwrite", action="store_true", help="replace an earlier demo's output")
    _add_common(demo)

    tr = sub.add_parser("train", help="train an original model and save it (cached)")
    tr.add_argument("--dataset", default="digits", help="data set to train on")
    tr.add_argument(
        "--model",
        default="cnn",
        help="architecture: a zoo name (see `bunlearn models`) or MODULE:FUNCTION",
    )
    tr.add_argument("--epochs", type=int, default=20, help="training epochs")
    tr.add_argument("--lr", type=float, default=0.01, help="learning rate")
    tr.add_argument("--batch-size", type=int, default=64, help="batch size")
    tr.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay")
    tr.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"], help="optimizer")
    tr.add_argument("--seed", type=int, default=0, help="seed of the initialisation and order")
    tr.add_argument("--out", required=True, help="folder for model.safetensors + model.json")
    tr.add_argument("--overwrite", action="store_true",
                    help="replace a model trained with other settings in --out")  # fmt: skip
    tr.add_argument("--subset", type=int, metavar="N",
                    help="train on a seeded, class-balanced subset of N training images (a "
                    "quick first try on a large data set)")  # fmt: skip
    tr.add_argument("--record-updates", action="store_true",
                    help="also save each class's summed parameter updates beside the model "
                    "(updates.safetensors, K copies of the weights), for amnesiac")  # fmt: skip
    _add_nproc(tr)
    _add_common(tr)
    _add_normalization(tr)

    un = sub.add_parser("unlearn", help="make an existing checkpoint forget a class")
    un.add_argument("--checkpoint", required=True, help="folder or .safetensors/.pt file")
    un.add_argument("--method", default="boundary_shrink", help="see `bunlearn methods`")
    un.add_argument("--forget-class", action="append", required=True, help="index or name")
    un.add_argument("--dataset", help="data set (default: the checkpoint's)")
    un.add_argument(
        "--model",
        help="architecture for a plain state_dict: a zoo name or "
        "MODULE:FUNCTION (FUNCTION(num_classes=K) returns the nn.Module)",
    )
    un.add_argument("--forget-fraction", type=float, default=1.0,
                    help="fraction of the forget class the method sees")  # fmt: skip
    un.add_argument("--seed", type=int, default=0, help="seed of the split and the method")
    un.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="method hyperparameter, e.g. --set eps=0.05")  # fmt: skip
    un.add_argument("--out", required=True, help="folder for the unlearned model and report")
    un.add_argument("--overwrite", action="store_true", help="replace an existing output")
    _add_common(un)
    _add_normalization(un)

    run = sub.add_parser(
        "run",
        help="train/cache, retrain, unlearn with several methods and seeds, report",
        description="Every option may also come from --config FILE.yaml (keys = the option "
        "names with underscores, e.g. forget_classes, hyperparameters); flags given here "
        "override the file. A method whose loss diverges is reported as failed and the "
        "others still run (exit code 0, one warning line per failure). Interrupted? Rerun "
        "the same command with --resume.",
    )
    run.add_argument("--config", help="YAML file of options (ExperimentConfig fields)")
    run.add_argument("--dataset", help="data set (default digits)")
    run.add_argument("--model", help="architecture: a zoo name (default cnn) or MODULE:FUNCTION")
    run.add_argument("--forget-class", action="append",
                     help="index or name (repeatable; default 3)")  # fmt: skip
    run.add_argument("--methods", help="comma-separated (default: both Boundary methods)")
    run.add_argument("--forget-fraction", type=float, help="fraction of D_f used (default 1)")
    run.add_argument("--seed", type=int, help="a single seed (default 0)")
    run.add_argument("--seeds", help="several seeds, e.g. 0,1,2: mean and std across them")
    run.add_argument("--epochs", type=int, help="original and retrain epochs (default 20)")
    run.add_argument("--lr", type=float, help="original and retrain lr (default 0.01)")
    run.add_argument("--batch-size", type=int, help="original and retrain batch (default 64)")
    run.add_argument("--subset", type=int, metavar="N",
                     help="use a seeded, class-balanced subset of N training images (default: "
                     "all)")  # fmt: skip
    run.add_argument("--set", action="append", default=[], metavar="METHOD.NAME=VALUE",
                     help="method hyperparameter, e.g. --set boundary_shrink.eps=0.05")  # fmt: skip
    run.add_argument("--ulira", action="store_true", default=None,
                     help="also run the U-LiRA attack (shadow models; slow)")  # fmt: skip
    run.add_argument("--no-relearn", dest="relearn", action="store_false", default=None,
                     help="skip the relearn-time metric")  # fmt: skip
    run.add_argument("--no-figures", dest="figures", action="store_false", default=None,
                     help="skip the figures (t-SNE, entropy, confusion)")  # fmt: skip
    run.add_argument("--out", required=True, help="output folder")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted run, reusing its finished stages")  # fmt: skip
    run.add_argument("--overwrite", action="store_true",
                     help="replace the results of an earlier run in --out")  # fmt: skip
    _add_nproc(run)
    _add_common(run)
    _add_normalization(run)
    run.set_defaults(device=None, download=None, quiet=None)  # None = not given: keep config's

    rep_p = sub.add_parser("report", help="re-render the reports of a run from its report.json")
    rep_p.add_argument("dir", help="the --out folder of a `bunlearn run`")
    rep_p.add_argument("--quiet", action="store_true", help="print nothing")

    rep = sub.add_parser("reproduce", help="run a suite of the paper's studies from a YAML config")
    rep.add_argument("--suite", help="shipped suite name (see --list) or a suite YAML file")
    rep.add_argument("--out", help="output folder (summary.md, one folder per study)")
    rep.add_argument("--quick", action="store_true", help="the suite's reduced smoke settings")
    rep.add_argument("--studies", help="comma-separated studies to run (default: all)")
    rep.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                     help="override the suite, e.g. --set experiment.epochs=5 or "
                          "--set studies.main.seeds=[0]")  # fmt: skip
    rep.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    rep.add_argument("--list", action="store_true", help="list the shipped suites and exit")
    _add_common(rep)

    sub.add_parser("methods", help="list the registered unlearning methods")
    sub.add_parser("models", help="list the registered models")
    return parser


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

    config = ExperimentConfig(
        dataset=args.dataset,
        model=args.model,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        weight_decay=args.weight_decay,
        optimizer=args.optimizer,
        seed=args.seed,
        data_root=args.data_root,
        download=args.download,
        cache_dir=args.cache_dir,
        device=args.device,
        progress=not args.quiet,
        record_updates=args.record_updates,
        subset=args.subset,
        mean=_floats("--mean", args.mean),
        std=_floats("--std", args.std),
    )
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
        checkpoint=args.checkpoint,
        method=args.method,
        forget_classes=args.forget_class,
        out=args.out,
        dataset=args.dataset,
        model=args.model,
        data_root=args.data_root,
        download=args.download,
        forget_fraction=args.forget_fraction,
        seed=args.seed,
        hyperparameters=_parse_sets(args.set, scoped=False),
        overwrite=args.overwrite,
        device=args.device,
        progress=not args.quiet,
        mean=_floats("--mean", args.mean),
        std=_floats("--std", args.std),
    )
    if not args.quiet:
        acc = report["results"][args.method]["acc"]
        before = report["results"]["original"]["acc"]
        print(
            f"{args.method}: forget accuracy {100 * before['forget']:.2f}% -> "
            f"{100 * acc['forget']:.2f}%, test-retain accuracy {100 * before['test_retain']:.2f}%"
            f" -> {100 * acc['test_retain']:.2f}%; wrote {args.out}"
        )
    return 0


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``ExperimentConfig`` fields the user gave as ``bunlearn run`` flags."""
    given: dict[str, Any] = {
        "dataset": args.dataset,
        "model": args.model,
        "forget_classes": args.forget_class,
        "forget_fraction": args.forget_fraction,
        "seed": args.seed,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "subset": args.subset,
        "data_root": args.data_root,
        "download": args.download,
        "cache_dir": args.cache_dir,
        "device": args.device,
        "ulira": args.ulira,
        "relearn": args.relearn,
        "figures": args.figures,
        "progress": False if args.quiet else None,
        "mean": _floats("--mean", args.mean),
        "std": _floats("--std", args.std),
    }
    if args.methods is not None:
        given["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.seeds is not None:
        try:
            given["seeds"] = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(
                f"--seeds {args.seeds!r} is not a comma-separated list of integers, e.g. 0,1,2"
            ) from None
    return {k: v for k, v in given.items() if v is not None}


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


def _cmd_report(args: argparse.Namespace) -> int:
    from .commands import rerender_reports

    rerender_reports(args.dir)
    if not args.quiet:
        print(f"re-rendered the reports in {args.dir} from its report.json")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import list_suites, load_suite, run_suite

    if args.list:
        for name in list_suites():
            print(name)
        return 0
    if not args.suite or not args.out:
        raise HyperparameterError("reproduce needs --suite NAME and --out DIR (or --list)")
    suite = load_suite(args.suite, quick=args.quick, overrides=_parse_sets(args.set, False))
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

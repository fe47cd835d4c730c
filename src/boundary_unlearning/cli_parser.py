"""The argument parser of ``bunlearn``: every sub-command, its options, their defaults and
help texts (:mod:`boundary_unlearning.cli` runs what it parses)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["DEMO_OUT", "build_parser"]

DEMO_OUT = "bunlearn-demo"


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help="folder holding the data set files")
    p.add_argument("--download", action="store_true", help="fetch the data set (needs internet)")
    p.add_argument("--cache-dir", help="where trained originals/retrained models are cached")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--quiet", action="store_true", help="no progress or table")


def _add_normalization(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mean",
        metavar="M[,M,M]",
        help="with --model MODULE:FUNCTION: feed the model (x - mean) / std; a zoo "
        "model: the normalisation inside it (default: the data's statistics)",
    )
    p.add_argument("--std", metavar="S[,S,S]", help="see --mean")  # fmt: skip


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
    """The parser of ``bunlearn`` and its sub-commands.

    Returns:
        A parser whose namespace holds ``command`` (the sub-command's name) and that
        sub-command's options.
    """
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
    un.add_argument("--full-eval", action="store_true",
                    help="read every image of every set for the accuracies (default: seeded "
                    "samples sized for intervals of about +-1.5 points that hold together at "
                    "95%%; D_f and D_tf whole up to 2,000 images)")  # fmt: skip
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
    run.add_argument("--no-probe", dest="probe", action="store_false", default=None,
                     help="skip the few-shot feature probe")  # fmt: skip
    run.add_argument("--full-eval", action="store_true", default=None,
                     help="read every image of every set for the metrics (default: D_r and "
                     "D_tr on seeded samples, each accuracy with its 95%% interval)")  # fmt: skip
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
    rep.add_argument("--full-eval", action="store_true",
                     help="every study reads every image for its metrics (default: seeded "
                     "samples, each accuracy with its 95%% interval)")  # fmt: skip
    rep.add_argument("--list", action="store_true", help="list the shipped suites and exit")
    _add_common(rep)

    hist = sub.add_parser("history", help="list the deletions a checkpoint records; --verify "
                          "checks them")  # fmt: skip
    hist.add_argument("checkpoint", help="a folder or weights file written by 'bunlearn unlearn'")
    hist.add_argument("--verify", action="store_true",
                      help="check every hash along the chain and measure each forgotten class "
                           "again on the data (exit 0: every deletion holds; 1: a class came "
                           "back; 2: a file changed or is missing)")  # fmt: skip
    hist.add_argument(
        "--search",
        action="append",
        default=[],
        metavar="DIR",
        help="another folder where the chain's checkpoints may be (repeatable)",
    )
    hist.add_argument("--data-root", help="the data set's folder (default: the recorded one)")

    sub.add_parser("methods", help="list the registered unlearning methods")
    sub.add_parser("models", help="list the registered models")
    return parser

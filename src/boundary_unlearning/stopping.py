"""When :func:`~boundary_unlearning.training.fit` stops before its step budget runs out, and
what each run did.

A stopping rule is any object with the hooks of :class:`StoppingRule`; ``fit`` calls them and
knows nothing else about the rule, so a new criterion is a new class, not an edit of the
loop. :class:`ForgetTarget` is the rule of the forget-only methods: stop as soon as at most
``target`` of the forget set is still predicted as its own class. :class:`AllOf` stops when
every one of several rules would (an additional criterion on top of the forget target).

:class:`FitResult` is what one ``fit`` did (steps, and the rule's target, verdict and trace);
:func:`collect_fits` gathers the results of every ``fit`` inside a block, which is how the
method registry learns how many steps a method took.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ._utils import eval_mode, model_device
from .data.streaming import input_batches
from .distributed_training import DistributedFit
from .errors import DivergenceError
from .recipe import Recipe, RunOptions

__all__ = [
    "AllOf",
    "FitResult",
    "FitRun",
    "ForgetTarget",
    "NeverStop",
    "StoppingRule",
    "collect_fits",
    "record_fit",
]


@dataclass
class FitResult:
    """What one call of ``fit`` did.

    Args:
        desc: the run's label (e.g. ``"finetune"``).
        steps: optimiser steps taken.
        target: the forgetting target, or ``None`` for an unmonitored run.
        reached_target: whether D_f went down to the target (``None``: no target).
        forget_trace: ``(step, share of D_f still in its class)`` at each check.

    Example:
        >>> FitResult("finetune", 12)
        FitResult(desc='finetune', steps=12, target=None, reached_target=None, forget_trace=[])
    """

    desc: str
    steps: int
    target: float | None = None
    reached_target: bool | None = None
    forget_trace: list[tuple[int, float]] = field(default_factory=list)


@dataclass(frozen=True)
class FitRun:
    """What a stopping rule may read about the run it watches (``fit`` makes one per run).

    Args:
        model: the model being trained.
        desc: the run's label, for messages.
        recipe: the run's optimisation settings.
        options: its run options (``compile_model`` hides the forward passes from hooks).
        steps_per_epoch: batches in one pass over the data.
        budget: the most steps the run takes.
        sync: the distributed step under torchrun, else ``None``.
        result: the run's :class:`FitResult`; a rule records its target, checks and verdict.
        show: shows values beside the progress bar (``show(forget_acc="0.050")``).
    """

    model: nn.Module
    desc: str
    recipe: Recipe
    options: RunOptions
    steps_per_epoch: int
    budget: int
    sync: DistributedFit | None
    result: FitResult
    show: Callable[..., Any]


class StoppingRule(Protocol):
    """The hooks ``fit`` calls on a stopping rule, in this order:

    ``start(run)`` once before the first step (install forward hooks, read the run);
    around every step ``before_step()`` (before the step's forward pass) and, after the
    optimiser step, ``after_step(step, rows)``, which says whether an exact check is due;
    ``check(model, step)`` when it is (``True``: stop now); ``finish(model, step, stopped)``
    once when the run ends, stopped or out of budget, giving the run's ``reached_target``;
    ``close()`` always, last (remove hooks).

    A loss function may draw extra batches of its own (a retain batch per step): the rule
    sees the model's first forward pass of each step, which is the step's training batch
    when the loss runs it first.
    """

    def start(self, run: FitRun) -> None: ...

    def before_step(self) -> None: ...

    def after_step(self, step: int, rows: torch.Tensor) -> bool: ...

    def check(self, model: nn.Module, step: int) -> bool: ...

    def finish(self, model: nn.Module, step: int, stopped: bool) -> bool | None: ...

    def close(self) -> None: ...


class NeverStop:
    """The rule of an unmonitored run: train the whole budget, no verdict.

    Example:
        >>> rule = NeverStop()
        >>> rule.after_step(3, torch.arange(2)), rule.finish(nn.Linear(1, 1), 3, False)
        (False, None)
    """

    def start(self, run: FitRun) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self, step: int, rows: torch.Tensor) -> bool:
        return False

    def check(self, model: nn.Module, step: int) -> bool:
        return False

    def finish(self, model: nn.Module, step: int, stopped: bool) -> bool | None:
        return None

    def close(self) -> None:
        pass


class AllOf:
    """Stop only when every rule would: each is checked whenever one is due, and the run
    reached its target when all of them did.

    Args:
        *rules: the rules (e.g. a :class:`ForgetTarget` and a feature criterion).

    Example:
        >>> both = AllOf(NeverStop(), NeverStop())
        >>> both.after_step(1, torch.arange(2)), both.finish(nn.Linear(1, 1), 1, False)
        (False, None)
    """

    def __init__(self, *rules: StoppingRule) -> None:
        self.rules = rules

    def start(self, run: FitRun) -> None:
        for rule in self.rules:
            rule.start(run)

    def before_step(self) -> None:
        for rule in self.rules:
            rule.before_step()

    def after_step(self, step: int, rows: torch.Tensor) -> bool:
        due = [rule.after_step(step, rows) for rule in self.rules]  # every rule sees the step
        return any(due)

    def check(self, model: nn.Module, step: int) -> bool:
        passed = [rule.check(model, step) for rule in self.rules]  # each records its check
        return all(passed)

    def finish(self, model: nn.Module, step: int, stopped: bool) -> bool | None:
        reached = [rule.finish(model, step, stopped) for rule in self.rules]
        return None if all(r is None for r in reached) else all(bool(r) for r in reached)

    def close(self) -> None:
        for rule in self.rules:
            rule.close()


class ForgetTarget:
    """Stop as soon as at most ``target`` of the forget set is still predicted as its own
    class (a share of the monitored samples, in eval mode).

    Only the first ``num_classes`` logits count, so a model with an extra (shadow) output is
    scored as it will be once that output is pruned. An exact check scores at most
    ``max_samples`` samples (a seeded choice) in eval mode, modes restored. Between checks
    the rule reads the predictions the training forward passes already make on each batch
    (the model's first forward of a step, through a hook; summed over the ranks under
    torchrun) and asks for a check only when the latest batch is at or below the target,
    and at most once per :meth:`check_every` steps after a check, so the rule costs about
    one forward pass over D_f per run. Under ``torch.compile`` (hooks do not see the
    compiled forward) it checks every :meth:`check_every` steps instead.

    With only the head training (``head`` given) the network below it is fixed, so its
    output for each forget image never changes: the rule keeps the head's inputs that the
    training steps computed (a hook on the head; not with dropout, whose training-mode
    features differ from eval mode's, nor across ranks) and a check then runs the head alone
    on them.

    Args:
        inputs: forget images, as the model takes them, in the order ``fit`` trains on them
            (a tensor, or a dataset read batch by batch).
        labels: their true classes.
        num_classes: the classifier's classes (without a shadow class).
        target: the share of the forget set allowed to stay in its class, in [0, 1).
        max_samples: cap on the samples scored per check.
        seed: which samples are scored when the cap applies.
        head: the final layer, when it is the only layer that trains.

    Example:
        >>> net = nn.Linear(4, 3)
        >>> with torch.no_grad():
        ...     _ = net.bias.copy_(torch.tensor([5.0, 0.0, 0.0]))  # everything is class 0
        >>> rule = ForgetTarget(torch.zeros(5, 4), torch.tensor([0, 0, 0, 1, 2]), 3, 0.05)
        >>> rule(net)  # 3 of the 5 samples are still in their class
        0.6
    """

    def __init__(
        self,
        inputs: torch.Tensor | Dataset[Any],
        labels: torch.Tensor,
        num_classes: int,
        target: float,
        *,
        max_samples: int = 1024,
        seed: int = 0,
        head: nn.Module | None = None,
    ) -> None:
        self.train_labels = labels
        n = len(inputs)  # type: ignore[arg-type]
        self.rows = torch.arange(n)
        if n > max_samples:
            pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
            self.rows = pick[:max_samples].sort().values
            labels = labels[self.rows]
            inputs = (
                inputs[self.rows] if isinstance(inputs, torch.Tensor)
                else Subset(inputs, self.rows.tolist())
            )  # fmt: skip
        self.inputs, self.labels, self.num_classes = inputs, labels, num_classes
        self.target, self.head = target, head
        self.use_cache = False  # on where the features below the head cannot change
        self._features: torch.Tensor | None = None  # per training row: the head's input
        self._seen: torch.Tensor | None = None
        self._outputs: list[torch.Tensor] = []  # the step's first model output
        self._head_inputs: list[torch.Tensor] = []  # the step's first head input
        self._hooks: list[Any] = []
        self._run: FitRun | None = None
        self._every = 1
        self._next_check = 0
        self._device = torch.device("cpu")

    # --- the hooks fit calls -----------------------------------------------------------

    def start(self, run: FitRun) -> None:
        """Read the run, install the hooks that watch the training forward passes.

        Args:
            run: the run to watch.
        """
        self._run = run
        run.result.target = self.target
        self._every = self.check_every(run.recipe.batch_size, run.steps_per_epoch)
        self._next_check = 0
        self._device = model_device(run.model)
        if not run.options.compile_model:
            self._hooks.append(run.model.register_forward_hook(self._keep_output))
        dropout = any(
            isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in run.model.modules()
        )
        self.use_cache = (
            self.head is not None and run.sync is None and not run.options.compile_model
            and not dropout
        )  # fmt: skip
        if self.use_cache and self.head is not None:
            self._hooks.append(self.head.register_forward_hook(self._keep_head_input))

    def before_step(self) -> None:
        """Forget the previous step's forward passes."""
        self._outputs.clear()
        self._head_inputs.clear()

    def after_step(self, step: int, rows: torch.Tensor) -> bool:
        """Keep the step's head inputs; say whether an exact check is due: the batch's own
        share is at or below the target, the budget is spent, or (compiled) it is time.

        Args:
            step: steps taken so far.
            rows: the training rows of the step's (global) batch.

        Returns:
            Whether :meth:`check` should run now.
        """
        run = self._run
        assert run is not None
        grabbed = self._head_inputs
        if grabbed and len(grabbed[0]) == len(rows):
            self.cache_features(grabbed[0], rows)
        if step < self._next_check:
            return False
        if run.options.compile_model:
            return True
        mine = rows if run.sync is None else run.sync.local_rows(rows)
        counts = (
            self.batch_counts(self._outputs[0], mine) if self._outputs
            else torch.zeros(2, device=self._device)
        )  # fmt: skip
        if run.sync is not None:  # every rank takes part in the sum, even with an empty share
            counts = run.sync.total_counts(counts)
        own, scored = counts.tolist()
        return step == run.budget or (scored > 0 and own <= self.target * scored)

    def check(self, model: nn.Module, step: int) -> bool:
        """The exact check: score the monitored samples, record the value, and say whether
        the target is reached.

        Args:
            model: the model being trained.
            step: steps taken so far.

        Returns:
            ``True`` when at most ``target`` of the monitored samples is still in its class.

        Raises:
            DivergenceError: the model's outputs are no longer finite.
        """
        run = self._run
        assert run is not None
        acc = self(model)
        if math.isnan(acc):
            raise DivergenceError(
                f"{run.desc}: the model's outputs became NaN or infinite by step {step}; "
                f"lower the learning rate (lr={run.recipe.lr:g})"
            )
        run.result.forget_trace.append((step, acc))
        run.show(forget_acc=f"{acc:.3f}")
        self._next_check = step + self._every
        return acc <= self.target

    def finish(self, model: nn.Module, step: int, stopped: bool) -> bool:
        """Whether the run reached the target; checks once more where the budget ran out.

        Args:
            model: the trained model.
            step: steps taken.
            stopped: the run stopped at a passed check.

        Returns:
            The run's ``reached_target``.
        """
        assert self._run is not None
        if stopped:
            return True
        trace = self._run.result.forget_trace
        if trace and trace[-1][0] == step:  # checked at this very step, and not reached
            return False
        return self.check(model, step)

    def close(self) -> None:
        """Remove the hooks."""
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    # --- measuring ---------------------------------------------------------------------

    def _keep_output(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        if not self._outputs:
            self._outputs.append(output)

    def _keep_head_input(self, _module: nn.Module, inputs: Any, _output: Any) -> None:
        if not self._head_inputs:
            self._head_inputs.append(inputs[0])

    def cache_features(self, features: torch.Tensor, idx: torch.Tensor) -> None:
        """Keep ``features`` (the head's input for the training rows ``idx``).

        Once every monitored row is cached and ``use_cache`` is on, a check runs the head
        alone on them.

        Args:
            features: the head's inputs for the rows.
            idx: the training rows (indices into ``inputs``).

        Example:
            >>> head = nn.Linear(4, 3)
            >>> with torch.no_grad():
            ...     _ = head.weight.zero_()
            ...     _ = head.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))  # always class 0
            >>> rule = ForgetTarget(torch.zeros(2, 4), torch.tensor([0, 1]), 3, 0.05, head=head)
            >>> rule.use_cache = True
            >>> rule.cache_features(torch.zeros(2, 4), torch.tensor([0, 1]))
            >>> rule(nn.Linear(5, 3))  # the model itself is not run (it would fail)
            0.5
        """
        features = features.detach()
        if self._features is None or self._seen is None:
            n = len(self.train_labels)
            self._features = features.new_zeros((n, *features.shape[1:]))
            self._seen = torch.zeros(n, dtype=torch.bool, device=features.device)
        idx = idx.to(features.device)
        self._features[idx] = features
        self._seen[idx] = True

    def _cached_logits(self, device: torch.device) -> torch.Tensor | None:
        if not self.use_cache or self.head is None or self._features is None:
            return None
        assert self._seen is not None
        rows = self.rows.to(self._seen.device)
        if not bool(self._seen[rows].all()):
            return None
        with eval_mode(self.head), torch.inference_mode():
            out: torch.Tensor = self.head(self._features[rows])
        return out[:, : self.num_classes].to(device)

    def batch_counts(self, logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``[still in their own class, scored]`` for the training rows ``idx``, from
        ``logits`` (the training forward pass's output on them); no host sync.

        Args:
            logits: the model's output on the rows (extra outputs are ignored).
            idx: the training rows.

        Returns:
            A float tensor ``[kept, scored]``, on the logits' device.

        Example:
            >>> rule = ForgetTarget(torch.zeros(2, 4), torch.tensor([0, 0]), 3, 0.05)
            >>> logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
            >>> rule.batch_counts(logits, torch.tensor([0, 1])).tolist()
            [1.0, 2.0]
        """
        labels = self.train_labels.to(logits.device)[idx.to(logits.device)]
        own = logits.detach()[: len(labels), : self.num_classes].argmax(1) == labels
        return torch.stack([own.sum(), torch.tensor(len(labels), device=logits.device)]).float()

    def __len__(self) -> int:
        return len(self.inputs)  # type: ignore[arg-type]

    def __call__(self, model: nn.Module) -> float:
        """The share of the monitored samples still predicted as their own class; NaN when
        the model's outputs are not finite."""
        device = model_device(model)
        logits = self._cached_logits(device)
        if logits is None:
            logits = self._forward(model, device)
        if not bool(torch.isfinite(logits).all()):  # a diverged model "forgets" everything
            return float("nan")
        kept = (logits.argmax(1) == self.labels.to(device)).sum()
        return float(kept) / max(len(self), 1)

    def _forward(self, model: nn.Module, device: torch.device) -> torch.Tensor:
        """The model's logits on the monitored samples (eval mode); with ``use_cache`` the
        head's inputs are kept too, so later checks run the head alone."""
        batch = 128 if device.type == "cpu" else 1024
        outs: list[torch.Tensor] = []
        grabbed: list[torch.Tensor] = []
        hook = None
        if self.use_cache and self.head is not None:
            hook = self.head.register_forward_hook(lambda m, i, o: grabbed.append(i[0]))
        try:
            with eval_mode(model), torch.inference_mode():
                for x in input_batches(self.inputs, batch, device):
                    outs.append(model(x)[:, : self.num_classes].clone())
        finally:
            if hook is not None:
                hook.remove()
        if hook is not None and len(grabbed) == len(outs):
            self.cache_features(torch.cat(grabbed).clone(), self.rows)
        return torch.cat(outs) if outs else torch.zeros((0, self.num_classes), device=device)

    def check_every(self, batch_size: int, steps_per_epoch: int) -> int:
        """Steps between checks when the training batches cannot be read (then at least
        one check per epoch, each costing at most ~25% of the steps between checks), and the
        wait after a check.

        Args:
            batch_size: samples per training step.
            steps_per_epoch: training steps per epoch.

        Returns:
            The number of steps, in ``1 .. steps_per_epoch``.

        Example:
            >>> labels = torch.zeros(100, dtype=torch.long)
            >>> rule = ForgetTarget(torch.zeros(100, 4), labels, 3, 0.05)
            >>> rule.check_every(64, 10), rule.check_every(8, 10)
            (3, 10)
        """
        return max(1, min(steps_per_epoch, math.ceil(len(self) / (0.75 * batch_size))))


_collectors: contextvars.ContextVar[tuple[list[FitResult], ...]] = contextvars.ContextVar(
    "fit_collectors", default=()
)


@contextlib.contextmanager
def collect_fits() -> Iterator[list[FitResult]]:
    """Collect the :class:`FitResult` of every ``fit`` call made inside the block, nested
    blocks included (a combination of methods sees the fits of both stages).

    Returns:
        A context manager giving the list the results are appended to.

    Example:
        >>> with collect_fits() as outer:
        ...     with collect_fits() as inner:
        ...         record_fit(FitResult("stage 1", 3))
        ...     record_fit(FitResult("stage 2", 5))
        >>> [f.steps for f in inner], [f.steps for f in outer]
        ([3], [3, 5])
    """
    results: list[FitResult] = []
    token = _collectors.set((*_collectors.get(), results))
    try:
        yield results
    finally:
        _collectors.reset(token)


def record_fit(result: FitResult) -> None:
    """Hand ``result`` to every open :func:`collect_fits` block (``fit`` calls it).

    Args:
        result: what one run did.

    Example:
        >>> record_fit(FitResult("outside any block", 1))  # nobody collects: a no-op
        >>> with collect_fits() as fits:
        ...     record_fit(FitResult("demo", 2))
        >>> fits
        [FitResult(desc='demo', steps=2, target=None, reached_target=None, forget_trace=[])]
    """
    for results in _collectors.get():
        results.append(result)

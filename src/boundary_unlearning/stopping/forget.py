"""The forget-only methods' stopping rule: stop as soon as at most a target share of the
forget set is still predicted as its own class."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .._utils import eval_mode, model_device
from ..data.streaming import input_batches, take_rows
from ..errors import DivergenceError
from .rule import FitRun

__all__ = ["ForgetTarget"]


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
            inputs = take_rows(inputs, self.rows)
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

"""The feature stage's frozen lower layers, computed once per image instead of every step.

The feature stage (:mod:`._features`) trains the upper layers of the network; the lower ones
are frozen (:func:`~boundary_unlearning.heads.frozen_below`) with BatchNorm in eval mode, so
what they compute for an image does not change during the stage. Yet each step ran them
again on its forget batch, its retained batch and the watched samples: on the zoo CNN the
frozen convolutions were 60% of a step. :class:`FrozenPrefix` finds, in one recorded forward
pass, the module calls that finish before the first trained parameter is read (the
*prefix*) and which of their outputs the rest of the pass reads (the *cut*); it keeps the
cut's values per image and, in later steps, makes those calls return the kept values instead
of computing them. The pass that follows is the same computation, so the stage trains the
same way; the first step checks this against a normal forward pass, and the replay stays off
wherever it cannot be exact: a stochastic or batch-dependent layer in the prefix (Dropout,
stochastic depth or any other random draw, a BatchNorm in train mode), a module called
twice, a cut value that is not one tensor per image, or a value the rest of the pass reads
that the prefix computed outside a module.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

__all__ = ["REPLAY_BUDGET", "FrozenPrefix"]

# The most bytes of kept cut values; images past it are computed each time they come back.
REPLAY_BUDGET = 256 * 1024**2


class _Call:
    """One module call of the recorded pass: its clock at start and end, its enclosing call
    and its output."""

    def __init__(self, module: nn.Module, start: int, parent: _Call | None) -> None:
        self.module, self.start, self.parent = module, start, parent
        self.end = math.inf
        self.output: Any = None


# Operations that draw random numbers (torchvision's stochastic depth calls ``bernoulli_``):
# the prefix's output would not be a function of the image alone.
_RANDOM = frozenset({
    "bernoulli", "bernoulli_", "rand", "rand_like", "randn", "randn_like", "randint",
    "randint_like", "randperm", "normal", "normal_", "uniform_", "multinomial", "exponential_",
    "geometric_", "cauchy_", "log_normal_", "random_", "poisson", "rrelu", "rrelu_",
})  # fmt: skip


def _draws_at_random(func: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> bool:
    """Whether ``func(*args, **kwargs)`` draws random numbers (a dropout only when training
    with p > 0)."""
    name = getattr(func, "__name__", "")
    if "dropout" in name:
        p = kwargs.get("p", args[1] if len(args) > 1 else 0.5)
        training = kwargs.get("training", kwargs.get("train", args[2] if len(args) > 2 else True))
        return bool(training) and not (isinstance(p, (int, float)) and p == 0)
    return name in _RANDOM


class _Recorder(TorchFunctionMode):
    """Counts the torch operations of a forward pass and notes the first one that reads a
    tensor requiring a gradient (a trained parameter: the end of the prefix), the ids of the
    tensors made before it and of those read from it on, and whether the prefix drew random
    numbers."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = 0
        self.trigger: int | None = None
        self.random = False
        self.made: set[int] = set()
        self.read_after: set[int] = set()
        self.alive: list[torch.Tensor] = []  # keeps ids from being reused during the pass

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: Any = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if self.trigger is None and any(t.requires_grad for t in tensors):
            self.trigger = self.clock
        if self.trigger is not None:
            self.read_after.update(id(t) for t in tensors)
        elif _draws_at_random(func, args, kwargs):
            self.random = True
        out = func(*args, **kwargs)
        if self.trigger is None:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self.made.add(id(t))
                    self.alive.append(t)
        self.clock += 1
        return out


class _Plan:
    """What to skip: the prefix's outermost calls (``skipped``), of which ``cut`` are read
    later (their per-image values are kept), with each skipped output's shape and dtype."""

    def __init__(self, skipped: list[_Call], cut: list[_Call]) -> None:
        self.skipped = [c.module for c in skipped]
        self.cut = [c.module for c in cut]
        self.shapes = {id(c.module): (tuple(c.output.shape[1:]), c.output.dtype) for c in skipped}
        self.last = max(cut, key=lambda c: c.end).module  # the prefix pass stops after it


def _plan(net: nn.Module, sample: torch.Tensor) -> _Plan | None:
    """Record one forward pass of ``sample`` (two images) and return what can be skipped
    exactly, or ``None``."""
    calls: list[_Call] = []
    stack: list[_Call] = []
    recorder = _Recorder()

    def pre(module: nn.Module, _args: Any) -> None:
        call = _Call(module, recorder.clock, stack[-1] if stack else None)
        calls.append(call)
        stack.append(call)

    def post(_module: nn.Module, _args: Any, output: Any) -> None:
        call = stack.pop()
        call.end, call.output = recorder.clock, output

    hooks = [m.register_forward_pre_hook(pre) for m in net.modules()]
    hooks += [m.register_forward_hook(post) for m in net.modules()]
    try:
        with recorder:
            net(sample)
    finally:
        for hook in hooks:
            hook.remove()
    trigger = recorder.trigger
    if trigger is None or recorder.random:
        return None  # nothing frozen, or noise below the cut

    def before(call: _Call | None) -> bool:
        return call is not None and call.end <= trigger

    skipped = [c for c in calls if before(c) and not before(c.parent)]
    if not skipped:
        return None
    counts: dict[int, int] = {}
    for call in calls:
        counts[id(call.module)] = counts.get(id(call.module), 0) + 1
    if any(
        not isinstance(c.output, torch.Tensor) or counts[id(c.module)] > 1
        or "forward" in vars(c.module) for c in skipped
    ):  # fmt: skip
        return None  # an output that is not one tensor, a module called again or patched
    if any(c.output.dim() == 0 or len(c.output) != len(sample) for c in skipped):
        return None  # not one row per image
    # an in-place layer (ReLU(inplace=True)) returns its input: the tensor holds the value of
    # the last call that returned it
    outputs = {id(c.output): c for c in skipped}
    read_later = recorder.made & recorder.read_after
    if not read_later <= outputs.keys():
        return None  # the rest of the pass reads a value the prefix made outside a module
    for call in skipped:
        for m in call.module.modules():
            noisy = isinstance(m, _DropoutNd) and m.p > 0
            if m.training and (noisy or isinstance(m, _BatchNorm)):
                return None  # batch statistics or noise: not a function of the image alone
    cut = [outputs[i] for i in read_later]
    return _Plan(skipped, cut) if cut else None


def _fast_layout(value: torch.Tensor) -> torch.Tensor:
    """A 4-D value on the CPU in channels-last memory format: the layers after the cut then
    run in it, where PyTorch's CPU pooling is several times faster (the same values up to
    rounding); anything else as it is."""
    if value.dim() != 4 or value.device.type != "cpu":
        return value
    return value.contiguous(memory_format=torch.channels_last)


class _CutComputedError(Exception):
    """Ends a prefix pass once the cut is computed."""


class FrozenPrefix:
    """The frozen prefix of a network in training, computed once per image (see the module
    docstring). :meth:`forward` runs the network on a batch whose rows are named by
    ``keys`` (any hashable, the same for the same image): the first call runs a normal
    pass, then records the plan and checks a replayed pass against it; later calls compute
    the prefix only for images not kept yet (a pass that stops at the cut) and replay the
    rest. Hooks that read a step's first full pass see the pass whose output is returned.

    Args:
        keep: whether to keep an image's cut values, by its key (images that will not come
            back need not be kept); at most :data:`REPLAY_BUDGET` bytes are.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3))
        >>> _ = net[0].requires_grad_(False)  # the frozen prefix: the first layer and the ReLU
        >>> prefix, x = FrozenPrefix(), torch.randn(4, 2)
        >>> first = prefix.forward(net, x, [0, 1, 2, 3])  # plan, keep, check
        >>> prefix.active, len(prefix)
        (True, 4)
        >>> torch.allclose(prefix.forward(net, x, [0, 1, 2, 3]), net(x))
        True
    """

    def __init__(self, *, keep: Callable[[Hashable], bool] = lambda _key: True) -> None:
        self.keep = keep
        self.plan: _Plan | None = None
        self.started = False
        self.kept: dict[Hashable, tuple[torch.Tensor, ...]] = {}
        self.bytes = 0

    @property
    def active(self) -> bool:
        """Whether the prefix is being replayed."""
        return self.plan is not None

    def __len__(self) -> int:
        return len(self.kept)

    def forward(self, net: nn.Module, x: torch.Tensor, keys: Sequence[Hashable]) -> torch.Tensor:
        """``net(x)``, replaying the prefix where it can.

        Args:
            net: the network (in the stage's modes; frozen parameters not requiring grad).
            x: the batch.
            keys: one key per row of ``x``.

        Returns:
            The network's output.
        """
        if not self.started:
            return self._start(net, x, keys)
        if self.plan is None:
            out: torch.Tensor = net(x)
            return out
        values = self._values(net, x, keys)
        with self._replaying(values):
            out = net(x)
        return out

    def _start(self, net: nn.Module, x: torch.Tensor, keys: Sequence[Hashable]) -> torch.Tensor:
        """The first step: a normal pass (first, as rules that read a step's first pass
        expect), then the plan and a replayed pass that must give the same output."""
        self.started = True
        out: torch.Tensor = net(x)
        self.plan = _plan(net, x[:2]) if len(x) >= 2 else None
        if self.plan is None:
            return out
        try:
            values = self._values(net, x, keys)
            with torch.no_grad(), self._replaying(values):
                replayed = net(x)
        except Exception:  # anything the replay trips on turns it off
            self._off()
            return out
        scale = float(out.detach().abs().max()) if out.numel() else 0.0
        if replayed.shape != out.shape or not torch.allclose(
            replayed.float(), out.detach().float(), rtol=1e-4, atol=1e-5 * max(scale, 1.0)
        ):
            self._off()
        return out

    def _off(self) -> None:
        self.plan, self.kept, self.bytes = None, {}, 0

    def _values(
        self, net: nn.Module, x: torch.Tensor, keys: Sequence[Hashable]
    ) -> list[torch.Tensor]:
        """The cut's values for the batch: kept ones gathered, the others computed by a
        prefix pass (and kept while the budget lasts)."""
        assert self.plan is not None
        missing = [i for i, key in enumerate(keys) if key not in self.kept]
        if missing:
            fresh = self._prefix_pass(net, x[torch.tensor(missing, device=x.device)])
            for j, i in enumerate(missing):
                size = sum(v[j].numel() * v[j].element_size() for v in fresh)
                if self.keep(keys[i]) and self.bytes + size <= REPLAY_BUDGET:
                    # a copy: a view would hold the whole batch's storage alive
                    self.kept[keys[i]] = tuple(v[j].clone() for v in fresh)
                    self.bytes += size
            if len(missing) == len(keys):
                return fresh
            at = {i: j for j, i in enumerate(missing)}
            return [
                _fast_layout(torch.stack([v[at[i]] if i in at else self.kept[keys[i]][n]
                                          for i in range(len(keys))]))
                for n, v in enumerate(fresh)
            ]  # fmt: skip
        return [
            _fast_layout(torch.stack([self.kept[key][n] for key in keys]))
            for n in range(len(self.plan.cut))
        ]

    def _prefix_pass(self, net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        """The cut's values for ``x``: a forward pass without gradients that stops once the
        last of them is computed."""
        assert self.plan is not None
        plan = self.plan
        found: dict[int, torch.Tensor] = {}

        def keep(module: nn.Module, _args: Any, output: torch.Tensor) -> None:
            found[id(module)] = _fast_layout(output.detach())
            if module is plan.last:
                raise _CutComputedError

        hooks = [m.register_forward_hook(keep) for m in plan.cut]
        try:
            with torch.no_grad():
                net(x)
        except _CutComputedError:
            pass
        finally:
            for hook in hooks:
                hook.remove()
        return [found[id(m)] for m in plan.cut]

    @contextlib.contextmanager
    def _replaying(self, values: list[torch.Tensor]) -> Iterator[None]:
        """Within the block the prefix's outermost calls return the cut's ``values`` (and
        the calls whose output nothing later reads, zeros of their shape) without computing."""
        assert self.plan is not None
        plan = self.plan
        n = len(values[0])
        given = {id(m): v for m, v in zip(plan.cut, values, strict=True)}

        def stand_in(module: nn.Module) -> Callable[..., torch.Tensor]:
            def forward(*_args: Any, **_kwargs: Any) -> torch.Tensor:
                if id(module) in given:
                    return given[id(module)]
                shape, dtype = plan.shapes[id(module)]
                return torch.zeros((), dtype=dtype, device=values[0].device).expand(n, *shape)

            return forward

        for module in plan.skipped:
            module.forward = stand_in(module)
        try:
            yield
        finally:
            for module in plan.skipped:
                del module.forward

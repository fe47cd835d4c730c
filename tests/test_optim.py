"""The optimisers of :mod:`boundary_unlearning.optim` against their reference, torch.optim:
the same weights, bit for bit, step after step; and no compiler imported to get them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from boundary_unlearning.optim import make_optimizer
from conftest import imported_after


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))


def _train(net: nn.Module, opt: object, steps: int = 6) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        x, y = torch.randn(16, 5, generator=gen), torch.randint(0, 3, (16,), generator=gen)
        opt.zero_grad(set_to_none=True)  # type: ignore[attr-defined]
        nn.functional.cross_entropy(net(x), y).backward()
        if step == 2:  # a frozen tensor mid-run: no gradient, no update, no state
            net[0].bias.grad = None
        for group in opt.param_groups:  # type: ignore[attr-defined]
            group["lr"] *= 1.5  # the loop's learning-rate growth
        opt.step()  # type: ignore[attr-defined]
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("foreach", [False, True])  # torch.optim's CPU and accelerator paths
@pytest.mark.parametrize(
    ("name", "settings", "reference"),
    [
        ("sgd", {"momentum": 0.9, "weight_decay": 5e-4}, torch.optim.SGD),
        ("sgd", {"momentum": 0.0, "weight_decay": 0.0}, torch.optim.SGD),
        ("adam", {"momentum": 0.9, "weight_decay": 5e-4}, torch.optim.Adam),
        ("adam", {"momentum": 0.0, "weight_decay": 0.0}, torch.optim.Adam),
    ],
)
def test_updates_match_torch_optim_bit_for_bit(name, settings, reference, foreach) -> None:
    ours_net, ref_net = _net(), _net()
    ours = make_optimizer(ours_net.parameters(), name, lr=0.01, **settings)
    kwargs = dict(settings) if name == "sgd" else {"weight_decay": settings["weight_decay"]}
    ref = reference(ref_net.parameters(), lr=0.01, foreach=foreach, **kwargs)
    for mine, theirs in zip(_train(ours_net, ours), _train(ref_net, ref), strict=True):
        assert torch.equal(mine, theirs)


def test_training_does_not_import_the_compiler() -> None:
    """A training step imports no ``torch._dynamo`` (``torch.optim`` would: +151 MB)."""
    code = (
        "import torch\n"
        "from boundary_unlearning.training import fit\n"
        "net = torch.nn.Linear(4, 2)\n"
        "x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))\n"
        "fit(net, (x, y), lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1]),\n"
        "    max_steps=3, lr=0.1, batch_size=8)\n"
    )
    assert not imported_after(code, "torch._dynamo")

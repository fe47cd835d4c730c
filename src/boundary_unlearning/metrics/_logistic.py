"""A class-balanced, L2-regularised multinomial logistic regression in torch, for the
few-shot probe (:func:`~boundary_unlearning.metrics.probe_forget_accuracy`).

It minimises scikit-learn's ``LogisticRegression(C=C, class_weight="balanced")`` objective
(the same problem, so the same unique solution, tested against it) with L-BFGS, in float64.
Written here rather than called from scikit-learn because an unlearning request fits the
probe and nothing else of scikit-learn: importing it costs ~79 MB resident and its five
fits ran slower than reading the images they fit (the probe was 2.2x one inference pass
over its images).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["LogisticProbe"]

_Objective = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class LogisticProbe:
    """Fit ``softmax(x @ weight.T + bias)`` to labels, each class weighted ``n / (k * n_c)``
    (balanced), with the penalty ``|weight|^2 / (2 C)`` (the bias is not penalised).

    Args:
        c: the inverse penalty strength (scikit-learn's ``C``).
        tol: stop when no gradient entry of the mean objective exceeds it (scikit-learn's
            default, which this solver then follows closely: coefficients within ~1e-4 of
            its, where both are ~0.06 from the exact optimum on a 3,000 x 128 problem).
        max_iter: the most L-BFGS iterations.
        history: the L-BFGS memory (curvature pairs kept).

    Example:
        >>> x = torch.tensor([[-2.0], [-1.0], [1.0], [2.0]], dtype=torch.float64)
        >>> probe = LogisticProbe().fit(x, torch.tensor([0, 0, 1, 1]))
        >>> probe.predict(torch.tensor([[-3.0], [3.0]], dtype=torch.float64)).tolist()
        [0, 1]
    """

    def __init__(
        self, *, c: float = 1.0, tol: float = 1e-4, max_iter: int = 2000, history: int = 10
    ) -> None:
        self.c, self.tol, self.max_iter, self.history = c, tol, max_iter, history
        self.classes = torch.empty(0, dtype=torch.long)
        self.weight = torch.empty(0, dtype=torch.float64)
        self.bias = torch.empty(0, dtype=torch.float64)
        self.iterations = 0

    def fit(
        self, x: torch.Tensor, y: torch.Tensor, *, start: LogisticProbe | None = None
    ) -> LogisticProbe:
        """Fit on features ``x`` (n x d, float64) and integer labels ``y`` (n), from zero or
        from the solution of ``start`` (a probe fitted on the same classes and features of
        the same width: a nearby problem then takes far fewer iterations to the tolerance)."""
        self.classes, codes = torch.unique(y, return_inverse=True)
        n, d, k = x.shape[0], x.shape[1], len(self.classes)
        counts = torch.bincount(codes, minlength=k).to(x.dtype)
        sample_weight = (n / (k * counts))[codes] / n  # balanced, summing to 1
        onehot = torch.nn.functional.one_hot(codes, k).to(x.dtype).T.contiguous()  # k x n
        x_t = x.T.contiguous()  # classes x samples: the softmax runs along contiguous rows
        penalty = 1.0 / (self.c * n)  # the mean-loss scaling of sum-loss + |w|^2 / (2C)

        def objective(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            weight, bias = theta[: k * d].view(k, d), theta[k * d :]
            log_p = torch.log_softmax(torch.addmm(bias[:, None], weight, x_t), dim=0)
            loss = -((log_p * onehot).sum(0) @ sample_weight)
            residual = (log_p.exp() - onehot) * sample_weight
            grad_w = residual @ x + penalty * weight
            loss = loss + 0.5 * penalty * (weight * weight).sum()
            return loss, torch.cat([grad_w.flatten(), residual.sum(1)])

        theta0 = torch.zeros(k * d + k, dtype=x.dtype, device=x.device)
        if (
            start is not None
            and torch.equal(start.classes, self.classes)
            and start.weight.shape == (k, d)
        ):
            theta0 = torch.cat([start.weight.flatten(), start.bias]).to(theta0)
        theta, self.iterations = _lbfgs(objective, theta0, self.tol, self.max_iter, self.history)
        self.weight, self.bias = theta[: k * d].view(k, d), theta[k * d :]
        return self

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The most likely class of each row of ``x``."""
        return self.classes[torch.argmax(torch.addmm(self.bias, x, self.weight.T), dim=1)]

    def __repr__(self) -> str:
        return f"LogisticProbe(c={self.c}, tol={self.tol}, max_iter={self.max_iter})"


def _lbfgs(
    objective: _Objective, theta: torch.Tensor, tol: float, max_iter: int, history: int
) -> tuple[torch.Tensor, int]:
    """Minimise a smooth convex ``objective`` (returning value and gradient) from ``theta``:
    L-BFGS directions, backtracking to the Armijo condition. Returns the point and the
    iterations taken; stops when the largest gradient entry is at most ``tol`` or the value
    stops falling (relative change below 64 machine epsilons, scipy's default)."""
    loss, grad = objective(theta)
    pairs: list[tuple[torch.Tensor, torch.Tensor, float]] = []  # (s, y, 1 / y.s)
    ftol = 64 * torch.finfo(theta.dtype).eps
    for iteration in range(max_iter):
        if float(grad.abs().max()) <= tol:
            return theta, iteration
        direction = -_two_loop(grad, pairs)
        slope = float(grad @ direction)
        if slope >= 0:  # not a descent direction (rounding): restart from the gradient
            pairs.clear()
            direction, slope = -grad / grad.norm(), -float(grad.norm())
        step = 1.0
        while True:
            new_theta = theta + step * direction
            new_loss, new_grad = objective(new_theta)
            if float(new_loss) <= float(loss) + 1e-4 * step * slope or step < 1e-12:
                break
            step *= 0.5
        s, y = new_theta - theta, new_grad - grad
        curvature = float(y @ s)
        if curvature > 1e-12:
            pairs.append((s, y, 1.0 / curvature))
            del pairs[:-history]
        drop = float(loss - new_loss) / max(abs(float(loss)), abs(float(new_loss)), 1.0)
        theta, loss, grad = new_theta, new_loss, new_grad
        if 0 <= drop <= ftol:
            return theta, iteration + 1
    return theta, max_iter


def _two_loop(
    grad: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor, float]]
) -> torch.Tensor:
    """The inverse-Hessian approximation of the kept pairs applied to ``grad`` (the first
    step, with none kept, is the gradient scaled to unit length)."""
    q = grad.clone()
    if not pairs:
        return q.div_(grad.norm())
    alphas = []
    for s, y, rho in reversed(pairs):
        alpha = rho * (s @ q)
        q -= alpha * y
        alphas.append(alpha)
    s, y, _ = pairs[-1]
    q *= (s @ y) / (y @ y)
    for (s, y, rho), alpha in zip(pairs, reversed(alphas), strict=True):
        beta = rho * (y @ q)
        q += (alpha - beta) * s
    return q

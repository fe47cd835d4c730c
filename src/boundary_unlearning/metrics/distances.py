"""Distances between output distributions: entropy, Jensen–Shannon, activation distance, ZRF.

All functions are pure: they take probability (or logit) tensors of shape ``(n, K)`` and
return a per-sample tensor or a float. Logarithms are natural (nats) throughout, so the
Jensen–Shannon divergence lies in ``[0, ln 2]``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "LN2",
    "activation_distance",
    "entropy",
    "js_divergence",
    "js_divergence_per_sample",
    "zrf_score",
]

LN2 = math.log(2.0)


def _check_pair(p: torch.Tensor, q: torch.Tensor) -> None:
    if p.shape != q.shape or p.dim() != 2:
        raise ValueError(
            f"expected two (n, K) probability tensors of the same shape, got {tuple(p.shape)} "
            f"and {tuple(q.shape)}"
        )


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy ``-sum_k p_k ln p_k`` (nats) of each row of ``probs`` (``0 ln 0 = 0``).

    Range ``[0, ln K]``. In the paper's figure, a model that forgot a class gives its training
    samples the high entropy of samples it never saw.

    Args:
        probs: ``(n, K)`` probabilities, each row summing to 1.

    Returns:
        ``(n,)`` entropies (float64).

    Example:
        >>> [round(h, 4) for h in entropy(torch.tensor([[0.5, 0.5], [0.9, 0.1]])).tolist()]
        [0.6931, 0.3251]
    """
    p = probs.double()
    out: torch.Tensor = -torch.special.xlogy(p, p).sum(dim=1)
    return out


def js_divergence_per_sample(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen–Shannon divergence (nats) between the rows of ``p`` and ``q``.

    ``JS(p, q) = 0.5 KL(p || m) + 0.5 KL(q || m)`` with ``m = (p + q) / 2`` and
    ``KL(a || b) = sum_k a_k ln(a_k / b_k)``. Symmetric, 0 for identical rows, at most
    ``ln 2`` (disjoint supports). Both KL terms point *into* the mixture ``m``, which is never
    zero where ``p`` or ``q`` is positive, so no epsilon is needed.

    Args:
        p: ``(n, K)`` probabilities.
        q: ``(n, K)`` probabilities.

    Returns:
        ``(n,)`` divergences in ``[0, ln 2]`` (float64).

    Raises:
        ValueError: ``p`` and ``q`` are not two ``(n, K)`` tensors of the same shape.

    Example:
        >>> p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
        >>> q = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
        >>> [round(js, 4) for js in js_divergence_per_sample(p, q).tolist()]  # ln 2, 0
        [0.6931, 0.0]
    """
    _check_pair(p, q)
    p, q = p.double(), q.double()
    m = 0.5 * (p + q)
    kl_pm = (torch.special.xlogy(p, p) - torch.special.xlogy(p, m)).sum(dim=1)
    kl_qm = (torch.special.xlogy(q, q) - torch.special.xlogy(q, m)).sum(dim=1)
    js: torch.Tensor = (0.5 * (kl_pm + kl_qm)).clamp(min=0.0, max=LN2)
    return js


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> float:
    """Mean over samples of the per-sample Jensen–Shannon divergence (nats, in ``[0, ln 2]``).

    Lower is closer; used as ``js_to_retrain`` on D_f (the unlearned model's outputs vs the
    retrained model's) — 0 means it answers exactly like the model that never saw the class.

    Args:
        p: ``(n, K)`` probabilities.
        q: ``(n, K)`` probabilities.

    Returns:
        The mean divergence, or NaN for ``n = 0``.

    Raises:
        ValueError: ``p`` and ``q`` are not two ``(n, K)`` tensors of the same shape.

    Example:
        >>> p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
        >>> q = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
        >>> round(js_divergence(p, q), 4)  # (ln 2 + 0) / 2
        0.3466
    """
    if len(p) == 0:
        return float("nan")
    return float(js_divergence_per_sample(p, q).mean())


def activation_distance(p: torch.Tensor, q: torch.Tensor) -> float:
    """Mean over samples of the L2 distance between two models' probability vectors.

    ``mean_i ||p_i - q_i||_2``, in ``[0, sqrt 2]``; lower is closer (Chundawat et al.,
    "Can bad teaching induce forgetting?", AAAI 2023, compare against the retrained model).

    Args:
        p: ``(n, K)`` probabilities of one model.
        q: ``(n, K)`` probabilities of the other on the same samples.

    Returns:
        The mean distance, or NaN for ``n = 0``.

    Raises:
        ValueError: ``p`` and ``q`` are not two ``(n, K)`` tensors of the same shape.

    Example:
        >>> p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
        >>> q = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
        >>> round(activation_distance(p, q), 4)  # (sqrt 2 + 0) / 2
        0.7071
    """
    _check_pair(p, q)
    if len(p) == 0:
        return float("nan")
    return float(torch.linalg.vector_norm(p.double() - q.double(), dim=1).mean())


def zrf_score(p: torch.Tensor, random_probs: torch.Tensor) -> float:
    """Zero Retrain Forgetting score (Chundawat et al., AAAI 2023): ``1 - mean_i JS(p_i, r_i)``.

    ``r`` are the outputs of a randomly initialised model of the same architecture on the same
    samples (D_f). JS in nats, so ZRF lies in ``[1 - ln 2, 1]`` (≈ ``[0.307, 1]``); 1 means the
    model answers like a random network. Compare with the retrained model's ZRF: a higher ZRF
    than retrain's is *over*-forgetting (a detectable "Streisand effect").

    Args:
        p: ``(n, K)`` probabilities of the model under test on D_f.
        random_probs: ``(n, K)`` probabilities of a randomly initialised model on D_f.

    Returns:
        The score, or NaN for ``n = 0``.

    Raises:
        ValueError: the two tensors are not ``(n, K)`` tensors of the same shape.

    Example:
        >>> p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
        >>> r = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
        >>> round(zrf_score(p, r), 4)  # 1 - (ln 2 + 0) / 2
        0.6534
    """
    if len(p) == 0:
        return float("nan")
    return 1.0 - js_divergence(p, random_probs)

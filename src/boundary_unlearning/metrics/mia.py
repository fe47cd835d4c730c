"""Membership-inference attacks on the forget set D_f, each with its direction stated.

The pure attacks take per-sample features (numpy arrays or tensors) of *members* (D_r, the
training data the model still holds), *non-members* (held-out test data) and *targets* (D_f)
and return one number. :func:`boundary_unlearning.metrics.compute_metrics` feeds them the
outputs of one forward pass per set. Every attack is seeded and balances its two training
groups by subsampling the larger one (each to at most 5,000 samples), so 0.5 is chance.

========================  ================================================  ==============
attack                    number reported                                   good value
========================  ================================================  ==============
``paper_asr``             fraction of D_f an attack trained on D_r vs test  retrain's (low)
                          probabilities calls "member" (Chen et al. 2023)
``confidence_svc``        fraction of D_f an SVC on p_y calls "non-member"  retrain's (high)
                          (SalUn "MIA-efficacy", Fan et al. ICLR 2024)
``loss_lr``               cross-validated accuracy of a logistic regression  0.5
                          telling D_f losses from held-out same-class losses
                          (SCRUB, Kurmanji et al. NeurIPS 2023)
``entropy``               fraction of D_f a logistic regression on output   retrain's (low)
                          entropy (D_r vs test) calls "member" (Bad Teacher,
                          SSD)
``ulira``                 fraction of D_f a per-example Gaussian likelihood  retrain's (low)
                          ratio over shadow models calls "member" (LiRA,
                          Carlini et al. 2022; U-LiRA, Hayes et al. 2024)
========================  ================================================  ==============
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import nn

from ..data.split import UnlearningData, to_tensors
from ..models import reinitialize
from .accuracy import predict_logits

__all__ = [
    "confidence_svc",
    "entropy_attack",
    "gaussian_log_likelihood_ratio",
    "logit_confidence",
    "loss_lr",
    "paper_asr",
    "sorted_log_probs",
    "ulira",
]

Array = NDArray[np.float64]


def _as_2d(values: ArrayLike | torch.Tensor) -> Array:
    if isinstance(values, torch.Tensor):
        values = values.detach().double().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 1)
    return arr.reshape(len(arr), -1)


# Attack training data per group at most (seeded subsample): bounds the RBF SVC's cost on
# large data sets (Fashion-MNIST: 54,000 D_r / 9,000 test samples) at no visible loss for
# one- to ten-dimensional features.
MAX_PER_GROUP = 5000


def _balanced(members: Array, nonmembers: Array, rng: np.random.Generator) -> tuple[Array, Array]:
    """Subsample the larger group (without replacement) to the size of the smaller one, and
    both to at most :data:`MAX_PER_GROUP`."""
    n = min(len(members), len(nonmembers), MAX_PER_GROUP)
    if len(members) > n:
        members = members[np.sort(rng.choice(len(members), n, replace=False))]
    if len(nonmembers) > n:
        nonmembers = nonmembers[np.sort(rng.choice(len(nonmembers), n, replace=False))]
    return members, nonmembers


def _fit_predict(
    classifier: Any,
    members: ArrayLike | torch.Tensor,
    nonmembers: ArrayLike | torch.Tensor,
    targets: ArrayLike | torch.Tensor,
    seed: int,
) -> Array | None:
    """Train ``classifier`` on balanced (members=1, non-members=0) and predict ``targets``.
    Returns None when a group or the targets are empty."""
    mem, non, tgt = _as_2d(members), _as_2d(nonmembers), _as_2d(targets)
    if len(mem) == 0 or len(non) == 0 or len(tgt) == 0:
        return None
    mem, non = _balanced(mem, non, np.random.default_rng(seed))
    x = np.concatenate([mem, non])
    y = np.concatenate([np.ones(len(mem)), np.zeros(len(non))])
    classifier.fit(x, y)
    pred: Array = np.asarray(classifier.predict(tgt), dtype=np.float64)
    return pred


def _logistic(seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))


def sorted_log_probs(probs: torch.Tensor, *, top: int = 10) -> torch.Tensor:
    """Class-agnostic attack features: the ``top`` largest log-probabilities of each row, in
    decreasing order (clamped at ln 1e-12), so an attack trained on the retained classes applies
    to the forgotten one.

    Args:
        probs: ``(n, K)`` probabilities.
        top: how many log-probabilities to keep per row (at most ``K``).

    Returns:
        ``(n, min(top, K))`` log-probabilities (float64), largest first.

    Example:
        >>> features = sorted_log_probs(torch.tensor([[0.1, 0.7, 0.2]]), top=2)
        >>> [round(v, 4) for v in features.flatten().tolist()]  # ln 0.7, ln 0.2
        [-0.3567, -1.6094]
    """
    k = min(top, probs.shape[1])
    return probs.double().clamp_min(1e-12).log().topk(k, dim=1).values


def paper_asr(
    member_probs: torch.Tensor,
    nonmember_probs: torch.Tensor,
    target_probs: torch.Tensor,
    *,
    seed: int = 0,
) -> float:
    """Paper-style attack success rate (Chen et al. 2023, Section 5): the fraction of D_f
    that an attack model calls "member".

    The attack (standardised logistic regression on the sorted log-probabilities, see
    :func:`sorted_log_probs`) is trained on the *target model's* outputs for D_r (members,
    label 1) vs held-out test data (non-members, label 0), balanced, then applied to D_f.
    **Lower is better after unlearning; the retrained model's value is the target** (the
    original model, which trained on D_f, scores near 1). NaN when a set is empty.

    Args:
        member_probs: ``(n, K)`` probabilities of the target model on D_r.
        nonmember_probs: ``(m, K)`` probabilities on held-out test data.
        target_probs: ``(t, K)`` probabilities on D_f.
        seed: seeds the balancing subsample and the attack model.

    Returns:
        The fraction of ``target_probs`` called member, or NaN.

    Example:
        >>> members = torch.tensor([[0.9, 0.1], [0.95, 0.05], [0.8, 0.2], [0.85, 0.15]])
        >>> nonmembers = torch.tensor([[0.5, 0.5], [0.4, 0.6], [0.6, 0.4], [0.55, 0.45]])
        >>> paper_asr(members, nonmembers, members[:2])
        1.0
        >>> paper_asr(members, nonmembers, nonmembers[:2])
        0.0
    """
    pred = _fit_predict(
        _logistic(seed),
        sorted_log_probs(member_probs),
        sorted_log_probs(nonmember_probs),
        sorted_log_probs(target_probs),
        seed,
    )
    return float("nan") if pred is None else float(pred.mean())


def confidence_svc(
    member_conf: ArrayLike | torch.Tensor,
    nonmember_conf: ArrayLike | torch.Tensor,
    target_conf: ArrayLike | torch.Tensor,
    *,
    seed: int = 0,
) -> float:
    """SalUn's "MIA-efficacy" (Fan et al., ICLR 2024; Jia et al., NeurIPS 2023): an RBF SVC
    (C=3, gamma="auto") on the confidence ``p_y`` of the true label, trained on D_r (members)
    vs test data (non-members), balanced; the number is the **fraction of D_f predicted
    non-member**. **Higher means more forgotten; the retrained model's value is the target.**
    NaN when a set is empty.

    Args:
        member_conf: ``(n,)`` true-label confidences on D_r.
        nonmember_conf: ``(m,)`` true-label confidences on held-out test data.
        target_conf: ``(t,)`` true-label confidences on D_f.
        seed: seeds the balancing subsample.

    Returns:
        The fraction of ``target_conf`` predicted non-member, or NaN.

    Example:
        >>> confidence_svc([0.9, 0.95, 0.99, 0.97], [0.2, 0.3, 0.1, 0.25], [0.15, 0.2])
        1.0
    """
    from sklearn.svm import SVC

    pred = _fit_predict(SVC(C=3, gamma="auto", kernel="rbf"), member_conf, nonmember_conf,
                        target_conf, seed)  # fmt: skip
    return float("nan") if pred is None else float(1.0 - pred.mean())


def entropy_attack(
    member_entropy: ArrayLike | torch.Tensor,
    nonmember_entropy: ArrayLike | torch.Tensor,
    target_entropy: ArrayLike | torch.Tensor,
    *,
    seed: int = 0,
) -> float:
    """Entropy-based attack (Chundawat et al. "Bad Teacher", AAAI 2023; Foster et al. "SSD",
    AAAI 2024): logistic regression on the output entropy, trained on D_r (members) vs test
    data (non-members), balanced; the number is the **fraction of D_f called member**.
    **Lower is better after unlearning; the retrained model's value is the target.**
    NaN when a set is empty.

    Args:
        member_entropy: ``(n,)`` output entropies on D_r.
        nonmember_entropy: ``(m,)`` output entropies on held-out test data.
        target_entropy: ``(t,)`` output entropies on D_f.
        seed: seeds the balancing subsample and the attack model.

    Returns:
        The fraction of ``target_entropy`` called member, or NaN.

    Example:
        >>> entropy_attack([0.01, 0.02, 0.03, 0.05], [0.6, 0.5, 0.7, 0.65], [0.04, 0.6])
        0.5
    """
    pred = _fit_predict(_logistic(seed), member_entropy, nonmember_entropy, target_entropy, seed)
    return float("nan") if pred is None else float(pred.mean())


def loss_lr(
    forget_losses: ArrayLike | torch.Tensor,
    heldout_losses: ArrayLike | torch.Tensor,
    *,
    seed: int = 0,
    n_splits: int = 5,
) -> float:
    """Loss-based attack with cross-validation (SCRUB, Kurmanji et al. NeurIPS 2023; NeurIPS
    2023 unlearning challenge kit): mean cross-validated accuracy of a logistic regression that
    tells the per-sample losses of D_f (label 1) from those of held-out samples of the *same*
    class(es) (D_tf, label 0), the two groups balanced by subsampling.

    **0.5 is ideal** (the forget samples look like unseen ones); above 0.5 the model still
    remembers them. ``n_splits`` stratified shuffled folds (fewer if a group is smaller).
    NaN when either group has fewer than 2 samples.

    Args:
        forget_losses: ``(n,)`` per-sample losses on D_f.
        heldout_losses: ``(m,)`` per-sample losses on held-out samples of the same class(es).
        seed: seeds the balancing subsample, the folds and the attack model.
        n_splits: the number of cross-validation folds.

    Returns:
        The mean cross-validated accuracy, or NaN.

    Example:
        >>> loss_lr([0.01, 0.02, 0.03, 0.05, 0.04], [2.0, 1.5, 3.0, 2.5, 1.8])  # remembered
        1.0
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    forget, held = _as_2d(forget_losses), _as_2d(heldout_losses)
    rng = np.random.default_rng(seed)
    forget, held = _balanced(forget, held, rng)
    n = len(forget)
    if n < 2:
        return float("nan")
    x = np.concatenate([forget, held])
    y = np.concatenate([np.ones(n), np.zeros(n)])
    cv = StratifiedKFold(n_splits=min(n_splits, n), shuffle=True, random_state=seed)
    scores = cross_val_score(_logistic(seed), x, y, cv=cv, scoring="accuracy")
    return float(np.mean(scores))


def logit_confidence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """LiRA's per-example score ``ln(p_y / (1 - p_y)) = z_y - logsumexp_{k != y} z_k``,
    computed from logits without overflow.

    Args:
        logits: ``(n, K)`` logits.
        labels: ``(n,)`` true labels.

    Returns:
        ``(n,)`` scores (float64); 0 means ``p_y = 0.5``.

    Example:
        >>> logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
        >>> logit_confidence(logits, torch.tensor([1, 0])).tolist()
        [0.0, 2.0]
    """
    z = logits.double()
    z_y = z.gather(1, labels.view(-1, 1).to(z.device)).squeeze(1)
    others = z.scatter(1, labels.view(-1, 1).to(z.device), -math.inf)
    return z_y - torch.logsumexp(others, dim=1)


def gaussian_log_likelihood_ratio(
    target: ArrayLike | torch.Tensor,
    in_scores: ArrayLike | torch.Tensor,
    out_scores: ArrayLike | torch.Tensor,
    *,
    min_std: float = 1e-3,
) -> Array:
    """Per-example ``ln N(t; mu_in, s_in) - ln N(t; mu_out, s_out)`` (LiRA, Carlini et al.
    2022). ``in_scores``/``out_scores`` are ``(n, m)`` with NaN for missing shadows; standard
    deviations are floored at ``min_std``. Positive means "member".

    Args:
        target: ``(n,)`` scores of the model under attack.
        in_scores: ``(n, m)`` scores of shadows trained on each example (NaN: none).
        out_scores: ``(n, m)`` scores of shadows not trained on it (NaN: none).
        min_std: the floor of the fitted standard deviations.

    Returns:
        ``(n,)`` log-likelihood ratios.

    Example:
        >>> llr = gaussian_log_likelihood_ratio(
        ...     [1.0, -1.0], [[1.0, 1.2, 0.8]] * 2, [[-1.0, -1.2, -0.8]] * 2
        ... )
        >>> np.round(llr, 2).tolist()
        [75.0, -75.0]
    """
    t = _as_2d(target)[:, 0]
    ins, outs = _as_2d(in_scores), _as_2d(out_scores)

    def log_normal(x: Array, scores: Array) -> Array:
        mu = np.nanmean(scores, axis=1)
        sd = np.maximum(np.nan_to_num(np.nanstd(scores, axis=1), nan=min_std), min_std)
        out: Array = -0.5 * ((x - mu) / sd) ** 2 - np.log(sd) - 0.5 * math.log(2 * math.pi)
        return out

    return log_normal(t, ins) - log_normal(t, outs)


def ulira(
    model: nn.Module,
    data: UnlearningData,
    *,
    shadows: int = 8,
    epochs: int = 10,
    lr: float = 0.01,
    batch_size: int = 64,
    seed: int = 0,
) -> float:
    """Per-example likelihood-ratio attack with shadow models on D_f (LiRA, Carlini et al.
    S&P 2022, in the unlearning audit of Hayes et al. 2024 "U-LiRA"). Opt-in and slow: it
    trains ``shadows`` fresh copies of the architecture (through :func:`training.fit`), each on
    D_r plus a seeded random half of D_f, so every forget sample is "in" about half of them.

    For each forget sample the logit-scaled confidence (:func:`logit_confidence`) of the
    "in" and "out" shadows is fitted by a Gaussian; the target model's score is called
    "member" when its likelihood ratio exceeds 1. The number is the **fraction of D_f called
    member: lower is better after unlearning, the retrained model's value is the target.**
    (Our shadows are not themselves unlearned, a simplification of U-LiRA.)

    Args:
        model: the model under attack; its architecture is copied for the shadows.
        data: the four sets (D_f is attacked, D_r trains the shadows).
        shadows: how many shadow models to train (NaN below 2).
        epochs: shadow training epochs.
        lr: shadow learning rate.
        batch_size: shadow batch size.
        seed: seeds the halves of D_f, the shadows' initialisation and training.

    Returns:
        The fraction of D_f called member, or NaN (empty D_f, fewer than 2 shadows, or no
        sample both in and out of some shadow).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> from boundary_unlearning.data.split import class_split
        >>> ds = TensorDataset(torch.rand(12, 2), torch.arange(12) % 3)
        >>> data = class_split(ds, ds, 2)
        >>> 0.0 <= ulira(nn.Linear(2, 3), data, shadows=2, epochs=1) <= 1.0
        True
    """
    from ..training import fit

    forget_x, forget_y = to_tensors(data.forget_eval)
    retain_x, retain_y = to_tensors(data.retain)
    n = len(forget_y)
    if n == 0 or shadows < 2:
        return float("nan")
    gen = torch.Generator().manual_seed(seed)
    scores = torch.empty((shadows, n), dtype=torch.float64)
    inside = torch.zeros((shadows, n), dtype=torch.bool)
    for s in range(shadows):
        mask = torch.rand(n, generator=gen) < 0.5
        inside[s] = mask
        shadow = reinitialize(model, seed * 1000 + s)
        x = torch.cat([retain_x, forget_x[mask]])
        y = torch.cat([retain_y, forget_y[mask]])
        fit(shadow, (x, y), epochs=epochs, lr=lr, batch_size=batch_size, seed=seed + s,
            desc=f"ulira shadow {s + 1}/{shadows}")  # fmt: skip
        scores[s] = logit_confidence(predict_logits(shadow, forget_x), forget_y).cpu()
    target = logit_confidence(predict_logits(model, forget_x), forget_y).cpu()
    nan = torch.full_like(scores, math.nan)
    in_scores = torch.where(inside, scores, nan).T
    out_scores = torch.where(~inside, scores, nan).T
    usable = (inside.sum(0) > 0) & ((~inside).sum(0) > 0)
    if not bool(usable.any()):
        return float("nan")
    llr = gaussian_log_likelihood_ratio(target[usable], in_scores[usable], out_scores[usable])
    return float((llr > 0).mean())

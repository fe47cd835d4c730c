"""Figure data (computed once, stored in ``report.json``) and the PNGs drawn from it.

:func:`figure_data` runs the models; the ``plot_*`` functions only draw from its JSON-able
output, so ``bunlearn report DIR`` re-renders every figure without a model.
The figures are the paper's: output-entropy histograms on remaining / forget / test data per
model, a 2-D t-SNE of penultimate features coloured by class (the "decision space"), and
confusion matrices on the test set.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from .._utils import eval_mode, model_device
from ..data.split import UnlearningData, to_tensors
from ..metrics.distances import entropy
from .schema import ModelFigures

__all__ = ["figure_data", "plot_confusion", "plot_entropy", "plot_tsne"]

DPI = 100


def _pick(n: int, k: int, rng: np.random.Generator) -> torch.Tensor:
    if n <= k:
        return torch.arange(n)
    return torch.as_tensor(np.sort(rng.choice(n, k, replace=False)), dtype=torch.long)


def _batched(fn: Any, x: torch.Tensor, device: torch.device, batch: int = 1024) -> torch.Tensor:
    outs = [fn(x[i : i + batch].to(device)).double().cpu() for i in range(0, len(x), batch)]
    return torch.cat(outs) if outs else torch.zeros((0, 0), dtype=torch.float64)


def _round(values: torch.Tensor | np.ndarray[Any, Any], digits: int = 4) -> list[Any]:
    arr = np.asarray(values, dtype=np.float64)
    return np.round(arr, digits).tolist()  # type: ignore[no-any-return]


def _tsne(features: torch.Tensor, seed: int) -> list[Any]:
    """Seeded 2-D t-SNE. Runs single-threaded: deterministic, and OpenMP threads spinning
    on busy cores made it 10-50x slower (29 s instead of 0.3 s for 100 points)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    n = len(features)
    if n < 4:
        return [[0.0, 0.0] for _ in range(n)]
    x = features.reshape(n, -1).numpy()
    perplexity = float(min(30.0, (n - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", max_iter=500,
                random_state=seed)  # fmt: skip
    with threadpool_limits(limits=1):
        emb = tsne.fit_transform(x)
    return _round(emb, 3)


def figure_data(
    models: Mapping[str, nn.Module],
    data: UnlearningData,
    *,
    seed: int = 0,
    max_points: int = 400,
) -> dict[str, Any]:
    """JSON-able inputs of every figure, for each model in ``models`` (name -> model), in the
    shape of :class:`~boundary_unlearning.report.schema.FigureData`.

    - ``entropy``: output entropies (nats) of at most ``max_points`` seeded samples each of
      D_r (``retain``), D_f (``forget``) and the whole test set (``test``);
    - ``tsne``: 2-D t-SNE (scikit-learn, ``random_state=seed``) of the penultimate features
      (``model.features`` when present, else the logits) of at most ``max_points`` training
      samples drawn evenly from every class (the same samples for every model), whose labels
      are in ``tsne_labels``;
    - ``confusion``: the ``K x K`` confusion matrix (rows true class, columns predicted) on the
      whole test set.

    Args:
        models: model name -> model.
        data: the class split.
        seed: seeds the samples and t-SNE.
        max_points: the most samples per set (and for t-SNE).

    Returns:
        The figure data (``num_classes``, ``forget_classes``, ``max_points``, ``seed``,
        ``tsne_labels``, ``models``).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> from boundary_unlearning.data.split import class_split
        >>> x, y = torch.rand(12, 2), torch.arange(12) % 3
        >>> data = class_split(TensorDataset(x, y), TensorDataset(x, y), 2)
        >>> figures = figure_data({"original": nn.Linear(2, 3)}, data, max_points=6)
        >>> figures["tsne_labels"], sorted(figures["models"]["original"])
        ([0, 0, 1, 1, 2, 2], ['confusion', 'entropy', 'tsne'])
    """
    rng = np.random.default_rng(seed)
    x_r, y_r = to_tensors(data.retain)
    x_f, y_f = to_tensors(data.forget_eval)
    x_tr, y_tr = to_tensors(data.test_retain)
    x_tf, y_tf = to_tensors(data.test_forget)
    x_test, y_test = torch.cat([x_tr, x_tf]), torch.cat([y_tr, y_tf])
    k = data.num_classes
    sets = {
        "retain": x_r[_pick(len(x_r), max_points, rng)],
        "forget": x_f[_pick(len(x_f), max_points, rng)],
        "test": x_test[_pick(len(x_test), max_points, rng)],
    }
    x_train, y_train = torch.cat([x_r, x_f]), torch.cat([y_r, y_f])
    per_class = max(1, max_points // k)
    chosen = [
        idx[_pick(len(idx), per_class, rng)]
        for c in range(k)
        if len(idx := torch.nonzero(y_train == c).flatten())
    ]
    tsne_idx = torch.cat(chosen) if chosen else torch.zeros(0, dtype=torch.long)
    x_tsne, y_tsne = x_train[tsne_idx], y_train[tsne_idx]

    out_models: dict[str, Any] = {}
    for name, model in models.items():
        device = model_device(model)
        with eval_mode(model), torch.inference_mode():
            ent = {
                key: _round(entropy(_batched(model, x, device).softmax(1)))
                for key, x in sets.items()
            }
            feat_fn = model.features if callable(getattr(model, "features", None)) else model
            features = _batched(feat_fn, x_tsne, device)
            pred = _batched(model, x_test, device).argmax(1)
        confusion = torch.zeros((k, k), dtype=torch.long)
        confusion.index_put_((y_test, pred), torch.ones_like(pred), accumulate=True)
        out_models[name] = {
            "entropy": ent,
            "tsne": _tsne(features, seed),
            "confusion": confusion.tolist(),
        }
    return {
        "num_classes": k,
        "forget_classes": list(data.forget_classes),
        "max_points": max_points,
        "seed": seed,
        "tsne_labels": y_tsne.tolist(),
        "models": out_models,
    }


# ----------------------------------------------------------------------------- drawing


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # The object-oriented API on the Agg canvas: no pyplot, no global backend change.
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _class_name(c: int, class_names: Mapping[int, str]) -> str:
    return f"{c} ({class_names[c]})" if str(class_names.get(c, c)) != str(c) else str(c)


def plot_entropy(model_data: ModelFigures, *, title: str, num_classes: int) -> bytes:
    """PNG: histograms of output entropy on remaining (D_r), forget (D_f) and test data for
    one model (the paper's entropy figure).

    Args:
        model_data: the model's figure data (its ``entropy`` samples are drawn).
        title: the model's name, for the title.
        num_classes: K; the x axis runs from 0 to ln K nats.

    Returns:
        The PNG bytes.

    Example:
        >>> samples = {"retain": [0.1, 0.2], "forget": [1.0], "test": [0.3]}
        >>> plot_entropy({"entropy": samples}, title="original", num_classes=3)[1:4]
        b'PNG'
    """
    fig = _figure(4.2, 3.0)
    ax = fig.add_subplot()
    top = math.log(max(num_classes, 2))
    bins = np.linspace(0.0, top, 26)
    styles = {
        "retain": ("remaining D_r", "tab:blue"),
        "forget": ("forget D_f", "tab:red"),
        "test": ("test", "tab:green"),
    }
    for key, (label, colour) in styles.items():
        values = np.asarray(model_data["entropy"].get(key, []), dtype=np.float64)
        if len(values):
            weights = np.full(len(values), 1.0 / len(values))
            ax.hist(values, bins=bins, weights=weights, histtype="step", linewidth=1.8,
                    color=colour, label=f"{label} (n={len(values)})")  # fmt: skip
    ax.set_xlim(0.0, top)
    ax.set_xlabel("output entropy (nats)")
    ax.set_ylabel("fraction of samples")
    ax.set_title(f"{title}: output entropy", fontsize=10)
    ax.legend(fontsize=7, loc="upper center")
    return _png(fig)


def plot_tsne(
    model_data: ModelFigures,
    labels: list[int],
    *,
    title: str,
    forget_classes: list[int],
    class_names: Mapping[int, str] | None = None,
) -> bytes:
    """PNG: 2-D t-SNE of penultimate features, one colour per true class; the forgotten
    class(es) drawn as black-edged crosses so one sees where its samples went.

    Args:
        model_data: the model's figure data (its ``tsne`` points are drawn).
        labels: the true class of each point (``FigureData.tsne_labels``).
        title: the model's name, for the title.
        forget_classes: the forgotten classes.
        class_names: class index -> name, for the legend.

    Returns:
        The PNG bytes.

    Example:
        >>> points = {"tsne": [[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]]}
        >>> plot_tsne(points, [0, 1, 2], title="original", forget_classes=[2])[1:4]
        b'PNG'
    """
    import matplotlib

    names = class_names or {}
    fig = _figure(4.6, 3.4)
    ax = fig.add_subplot()
    emb = np.asarray(model_data["tsne"], dtype=np.float64).reshape(-1, 2)
    y = np.asarray(labels)
    cmap = matplotlib.colormaps["tab10" if max(y, default=0) < 10 else "tab20"]
    for c in sorted(set(y.tolist())):
        mask = y == c
        colour = cmap(c % cmap.N)
        if c in forget_classes:
            ax.scatter(emb[mask, 0], emb[mask, 1], s=28, marker="X", color=colour,
                       edgecolors="black", linewidths=0.6, zorder=3,
                       label=f"{_class_name(c, names)} forgotten")  # fmt: skip
        else:
            ax.scatter(emb[mask, 0], emb[mask, 1], s=6, color=colour, alpha=0.7,
                       label=_class_name(c, names))  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.set_title(f"{title}: penultimate features", fontsize=10)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5), title="class",
              title_fontsize=7, markerscale=1.5, frameon=False)  # fmt: skip
    return _png(fig)


def plot_confusion(model_data: ModelFigures, *, title: str, forget_classes: list[int]) -> bytes:
    """PNG: test-set confusion matrix, each row normalised to the fraction of that true class;
    the forgotten class's row is outlined in red.

    Args:
        model_data: the model's figure data (its ``confusion`` matrix is drawn).
        title: the model's name, for the title.
        forget_classes: the forgotten classes, whose rows are outlined.

    Returns:
        The PNG bytes.

    Example:
        >>> counts = {"confusion": [[2, 0], [1, 1]]}
        >>> plot_confusion(counts, title="original", forget_classes=[1])[1:4]
        b'PNG'
    """
    cm = np.asarray(model_data["confusion"], dtype=np.float64)
    k = len(cm)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig = _figure(3.8, 3.3)
    ax = fig.add_subplot()
    image = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of true class")
    ticks = list(range(k))
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{title}: test confusion", fontsize=10)
    if k <= 10:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=6,
                            color="white" if frac[i, j] > 0.5 else "black")  # fmt: skip
    from matplotlib.patches import Rectangle

    for c in forget_classes:
        if 0 <= c < k:
            ax.add_patch(Rectangle((-0.5, c - 0.5), k, 1, fill=False, edgecolor="red", lw=1.5))
    return _png(fig)

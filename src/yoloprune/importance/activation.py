"""The seed's activation-based criteria: keep one channel per cluster of alike-behaving channels.

For each group, from activations sampled at ground-truth box centres (`Evidence.samples`):
  1. per producer conv and channel, a separability vector: the Jeffries-Matusita distance between
     the channel's activation distributions of every pair of classes (Gaussian per class);
  2. per channel class, its vectors of all measured producers side by side; t-SNE to 2-D (after
     PCA to 50 dimensions when there are more);
  3. k-medoids (FasterPAM) for every k on a grid of 2..n-1, scored by the mean simplified
     (medoid) silhouette; k is the knee of that curve's running best (see `cluster`);
  4. one channel kept per cluster: the largest L1 weight (`act-maxweight`), the medoid
     (`act-medoid`) or the largest BatchNorm gamma (`act-maxgamma`).
The criterion returns `Ranking(scores, keep=k)`: kept channels score above all others, so
`ratio="auto"` keeps exactly them and a numeric ratio keeps them first. scikit-learn, kmedoids and kneed
are the `yoloprune[activation]` extra, imported on first use.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from yoloprune.errors import OptionError
from yoloprune.graph.groups import Group
from yoloprune.importance._evidence import class_means, measured
from yoloprune.importance.base import CRITERIA, Context, Criterion, Ranking, register
from yoloprune.text import plural

MIN_SAMPLES = 2  # a class needs this many boxes to have a variance
MIN_CLUSTERED = 4  # groups with fewer channels keep them all: 2..n-1 clusters leaves nothing to compare
_PCA_DIMS = 50
_K_GRID = 64  # at most this many cluster counts are tried


def separability(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Jeffries-Matusita distance, in [0, 2], between the classes' activation distributions of each
    channel: (N, C) activations and (N,) class ids -> (C, P), one column per pair of classes with at
    least `MIN_SAMPLES` samples. Each class is a 1-D Gaussian per channel; the Bhattacharyya
    distance B gives JM = 2 (1 - exp(-B)). Variances are floored at 1e-3 of the channel's overall
    variance, so a channel constant within classes but not across them scores 2 and a constant
    channel scores 0.

    Example:
        >>> x = np.array([[0.0, 1.0], [0.1, 1.0], [5.0, 1.0], [5.1, 1.0]])
        >>> separability(x, np.array([0, 0, 1, 1])).round(2).tolist()  # channel 0 separates, 1 does not
        [[2.0], [0.0]]
    """
    x = np.asarray(x, dtype=np.float64)
    classes, counts = np.unique(y, return_counts=True)
    classes = classes[counts >= MIN_SAMPLES]
    if len(classes) < 2:
        raise OptionError(
            f"the act-* criteria compare activations between classes, but the calibration images have "
            f"at least {MIN_SAMPLES} boxes of only {plural(len(classes), 'class', 'classes')}; raise "
            "`calib_images` or calibrate on a dataset with several classes."
        )
    mu = np.stack([x[y == c].mean(0) for c in classes])  # (K, C)
    var = np.maximum(np.stack([x[y == c].var(0) for c in classes]), 1e-3 * x.var(0) + 1e-12)  # (K, C)
    i, j = np.triu_indices(len(classes), 1)  # (P,) each
    both = var[i] + var[j]  # (P, C)
    b = (mu[i] - mu[j]) ** 2 / (4 * both) + 0.5 * np.log(both / (2 * np.sqrt(var[i] * var[j])))
    return (2 * (1 - np.exp(-b))).T  # (C, P)


def features(ctx: Context, group: Group, criterion: str) -> np.ndarray:
    """(group.size, D): each class's separability vectors at every measured producer, side by side
    (averaged over a producer's positions when a class occupies several, e.g. after `chunk`)."""
    members, table = measured(ctx, group, "samples", criterion)
    blocks = []
    for m in members:
        x, y = table[m.module]
        blocks.append(class_means(ctx, group, m, separability(x, y)))
    return np.concatenate(blocks, axis=1)


def embed(points: np.ndarray, seed: int) -> np.ndarray:
    """(n, D) -> (n, 2) with t-SNE (perplexity min(30, (n - 1) / 3)); PCA first when D > 50."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    n, d = points.shape
    if d < 2:
        return np.concatenate([points, np.zeros_like(points)], axis=1)
    if d > _PCA_DIMS:
        points = PCA(min(_PCA_DIMS, n), random_state=seed).fit_transform(points)
    perplexity = max(1.0, min(30.0, (n - 1) / 3))
    tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed, max_iter=500, n_jobs=1)
    return tsne.fit_transform(points)


@dataclass(frozen=True)
class Clusters:
    """A partition of n channels: cluster label per channel, medoid per cluster, silhouette curve."""

    labels: np.ndarray  # (n,) in [0, k)
    medoids: np.ndarray  # (k,) channel indices
    spread: np.ndarray  # (n,) each point's distance from its cluster's medoid
    curve: tuple[tuple[int, float], ...] = ()  # (k, mean simplified silhouette) for every k tried

    @property
    def k(self) -> int:
        return len(self.medoids)


def cluster(points: np.ndarray, seed: int) -> Clusters:
    """k-medoids of (n, 2) points with k at the knee of the mean simplified silhouette curve.

    Singletons count 0 in the silhouette (Rousseeuw's convention; the medoid silhouette would give
    them 1, so the curve would always climb to 1 at k = n). The silhouette is not monotone in k, so
    the knee (kneed, concave, increasing, online: its last knee) is taken on its running best: the k
    after which more clusters stop improving the best silhouette found; the clustering used is the
    best one with at most that many clusters. Without a knee (the curve only falls), the best k.
    k is tried on a geometric grid of 2..n-1 (every k while they are dense). Coinciding points
    form one cluster; fewer than `MIN_CLUSTERED` points are each their own cluster.

    Example:
        >>> pts = np.concatenate([np.random.default_rng(0).normal(c, 0.1, (10, 2)) for c in (0, 5, 10)])
        >>> cluster(pts, seed=0).k
        3
    """
    import kmedoids
    from kneed import KneeLocator

    n = len(points)
    distinct = len(np.unique(points, axis=0))
    if distinct == 1 or n < MIN_CLUSTERED:
        labels = np.zeros(n, dtype=int) if distinct == 1 else np.arange(n)
        return Clusters(labels, np.array([0]) if distinct == 1 else np.arange(n), np.zeros(n))
    diss = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1))  # (n, n) Euclidean
    ks = np.unique(np.geomspace(2, min(n - 1, distinct), _K_GRID).round().astype(int))
    fits = [kmedoids.fasterpam(diss, int(k), random_state=seed, n_cpu=1) for k in ks]
    curve = np.array([_silhouette(diss, f.medoids, f.labels) for f in fits])
    running = np.maximum.accumulate(curve)
    knee = None
    if len(ks) > 2 and running[-1] > running[0]:
        with warnings.catch_warnings():  # kneed warns when there is no knee; that case is handled
            warnings.simplefilter("ignore")
            knee = KneeLocator(ks, running, curve="concave", direction="increasing", online=True).knee
    upto = len(ks) if knee is None else int(np.flatnonzero(ks == knee)[0]) + 1
    chosen = fits[int(np.argmax(curve[:upto]))]
    labels, medoids = np.asarray(chosen.labels), np.asarray(chosen.medoids)
    spread = diss[np.arange(n), medoids[labels]]
    return Clusters(labels, medoids, spread, tuple(zip(ks.tolist(), curve.tolist(), strict=True)))


def _silhouette(diss: np.ndarray, medoids: np.ndarray, labels: np.ndarray) -> float:
    import kmedoids

    _, per_point = kmedoids.medoid_silhouette(diss, medoids, samples=True)
    sizes = np.bincount(labels, minlength=len(medoids))
    return float(np.where(sizes[labels] == 1, 0.0, per_point).mean())


Rule = Callable[[Context, Group, Clusters], tuple[np.ndarray, np.ndarray]]  # -> (kept, secondary)


def _activation_criterion(name: str, rule: Rule) -> Criterion:
    def score(ctx: Context, group: Group) -> Ranking:
        _require(name)
        seed = int(ctx.rng.integers(2**31))
        clusters = cluster(embed(features(ctx, group, name), seed), seed)
        kept, secondary = rule(ctx, group, clusters)
        scores = secondary + kept * (np.ptp(secondary) + 1.0)  # every kept channel above every other
        return Ranking(scores, keep=int(kept.sum()))

    return score


def _require(name: str) -> None:
    try:
        import kmedoids  # noqa: F401
        import kneed  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as e:
        raise OptionError(
            f"`importance={name!r}` needs scikit-learn, kmedoids and kneed: `pip install "
            f"yoloprune[activation]` ({e.name} is missing)."
        ) from e


def _best_per_cluster(by: str) -> Rule:
    """Keep each cluster's channel with the highest `by` criterion score (ties: the first)."""

    def rule(ctx: Context, group: Group, clusters: Clusters) -> tuple[np.ndarray, np.ndarray]:
        values = np.asarray(CRITERIA[by](ctx, group), dtype=np.float64)  # (n,)
        kept = np.zeros(group.size, dtype=bool)
        for c in range(clusters.k):
            members = np.flatnonzero(clusters.labels == c)
            kept[members[np.argmax(values[members])]] = True
        return kept, values

    return rule


def _medoids(ctx: Context, group: Group, clusters: Clusters) -> tuple[np.ndarray, np.ndarray]:
    """Keep each cluster's medoid; medoids rank by cluster size, the rest by distance from their
    medoid in the embedding (the worse a channel is represented, the more it matters)."""
    kept = np.zeros(group.size, dtype=bool)
    kept[clusters.medoids] = True
    sizes = np.bincount(clusters.labels, minlength=clusters.k)[clusters.labels]
    return kept, np.where(kept, sizes, clusters.spread).astype(np.float64)


_RULES: dict[str, Rule] = {
    "act-maxweight": _best_per_cluster("l1"),
    "act-medoid": _medoids,
    "act-maxgamma": _best_per_cluster("bn"),
}
for _name, _rule in _RULES.items():
    register(_name, needs=frozenset({"samples"}))(_activation_criterion(_name, _rule))
ACTIVATION_CRITERIA: tuple[str, ...] = tuple(_RULES)

"""transfer_report: pretrained candidates against cheap baselines, on the same folds."""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import numpy as np
from scipy import stats
from sklearn.base import clone
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions, validate_params

from sktransfer.diagnostics._common import fixed_splits, fold_scores, supervised_defaults

VERDICT_RULE = (
    "Each candidate is compared with the best baseline (highest mean score) fold by fold, on "
    "the same splits. The difference is tested with the corrected resampled t-test of Nadeau "
    "and Bengio (2003), which accounts for the overlap of cross-validation training sets. "
    "Verdict: 'positive' when the mean difference exceeds +margin and p < alpha; 'negative' "
    "when it is below -margin and p < alpha; otherwise 'neutral' (no evidence either way)."
)


@dataclass
class TransferReport:
    """Result of :func:`transfer_report`.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per model: role (candidate or baseline), mean and std of the fold scores,
        difference from the best baseline, p-value, verdict, seconds.
    fold_scores : dict of str to ndarray
        The score of every model on every fold (the same folds for all).
    best_baseline : str
        Name of the baseline candidates are compared with.
    scoring : str
    rule : str
        How verdicts are decided.
    """

    table: Any
    fold_scores: dict[str, np.ndarray]
    best_baseline: str
    scoring: str
    rule: str = field(default=VERDICT_RULE, repr=False)

    def verdict(self, name: str) -> str:
        """The verdict of one candidate: "positive", "neutral" or "negative"."""
        return str(self.table.loc[name, "verdict"])

    def plot(self, ax: Any = None) -> Any:
        """Mean ± std of every model as horizontal bars, coloured by verdict."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 0.5 * len(self.table) + 1.2))
        colours = {"positive": "tab:green", "neutral": "tab:gray", "negative": "tab:red",
                   "": "tab:blue"}
        table = self.table.iloc[::-1]
        ax.barh(table.index, table["mean"], xerr=table["std"],
                color=[colours[v] for v in table["verdict"]], alpha=0.8)
        lows = (table["mean"] - table["std"]).min()
        ax.set_xlim(max(0.0, lows - 0.05), min(1.0, (table["mean"] + table["std"]).max() + 0.02))
        ax.set_xlabel(self.scoring)
        ax.set_title("Transfer report (blue: baselines)")
        return ax

    def _repr_html_(self) -> str:
        return self.table.to_html(float_format="%.3f")

    def __str__(self) -> str:
        return self.table.to_string(float_format=lambda v: f"{v:.3f}")


@validate_params(
    {"X": ["array-like"], "y": ["array-like"], "candidates": [dict],
     "baselines": [dict, StrOptions({"auto"})], "cv": ["cv_object"],
     "groups": [None, "array-like"], "scoring": [None, str],
     "head": [None, HasMethods(["fit", "predict"])],
     "alpha": [Interval(Real, 0, 1, closed="neither")],
     "margin": [Interval(Real, 0, None, closed="left")]},
    prefer_skip_nested_validation=True,
)
def transfer_report(
    X: Any,
    y: Any,
    candidates: dict[str, Any],
    baselines: dict[str, Any] | str = "auto",
    *,
    cv: Any = 5,
    groups: Any = None,
    scoring: str | None = None,
    head: Any = None,
    alpha: float = 0.05,
    margin: float = 0.01,
) -> TransferReport:
    """Does pretraining help on this data? Candidates against baselines, same CV splits.

    Parameters
    ----------
    X, y : samples (images or texts as the embedders accept) and targets.
    candidates : dict of name to model
        Embedders (then a ``head`` is trained on their features), other transformers (put in
        a pipeline with the head) or full estimators.
    baselines : dict of name to model, or "auto"
        ``"auto"``: for image embedders, raw 32×32 pixels, colour histograms and each
        candidate's architecture with random weights; for text embedders, TF-IDF.
    cv : int, splitter or iterable, default=5
        As in scikit-learn; the folds are computed once and shared by every model.
    groups : array-like, optional
        Group labels for group splitters (e.g. films for review snippets).
    scoring : str, optional
        A scikit-learn scorer name; balanced accuracy (classification) or R² by default.
    head : estimator, optional
        Trained on every feature set; scaled logistic (ridge) regression by default.
    alpha, margin : float
        Significance level and the smallest difference that counts (see ``VERDICT_RULE``).

    Returns
    -------
    TransferReport

    Examples
    --------
    >>> from sktransfer import TextEmbedder
    >>> from sktransfer.datasets import load_rotten_tomatoes
    >>> from sktransfer.diagnostics import transfer_report
    >>> reviews = load_rotten_tomatoes(n_samples=400)
    >>> report = transfer_report(reviews.text, reviews.target, {"MiniLM": TextEmbedder()},
    ...                          cv=3)
    >>> list(report.table.index)
    ['MiniLM', 'TF-IDF']
    >>> report.verdict("MiniLM") in ("positive", "neutral", "negative")
    True
    """
    import pandas as pd

    if not candidates:
        raise ValueError("give at least one candidate")
    if isinstance(baselines, str):
        baselines = auto_baselines(candidates)
    if not baselines:
        raise ValueError("give at least one baseline to compare with")
    overlap = set(candidates) & set(baselines)
    if overlap:
        raise ValueError(f"names used as both candidate and baseline: {sorted(overlap)}")
    head, scoring = supervised_defaults(y, head, scoring)
    splits = fixed_splits(X, y, cv, groups)
    n_train = float(np.mean([len(train) for train, _ in splits]))
    n_test = float(np.mean([len(test) for _, test in splits]))

    scores: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for name, model in {**candidates, **baselines}.items():
        scores[name], seconds[name] = fold_scores(model, X, y, splits, head, scoring)
    best = max(baselines, key=lambda name: scores[name].mean())

    rows = []
    for name in [*candidates, *baselines]:
        row = {"role": "candidate" if name in candidates else "baseline",
               "mean": scores[name].mean(), "std": scores[name].std(),
               "diff_vs_best_baseline": np.nan, "p_value": np.nan, "verdict": "",
               "seconds": seconds[name]}
        if name in candidates:
            diff, p = corrected_paired_ttest(scores[name], scores[best], n_train, n_test)
            row.update(diff_vs_best_baseline=diff, p_value=p,
                       verdict=verdict(diff, p, alpha=alpha, margin=margin))
        rows.append(pd.Series(row, name=name))
    return TransferReport(table=pd.DataFrame(rows), fold_scores=scores, best_baseline=best,
                          scoring=scoring)


def auto_baselines(candidates: dict[str, Any]) -> dict[str, Any]:
    """Cheap baselines that fit the candidates' kind of data."""
    from sktransfer.diagnostics._baselines import ColorHistogram, DownsampledPixels
    from sktransfer.image import ImageEmbedder
    from sktransfer.text import TextEmbedder

    baselines: dict[str, Any] = {}
    images = [(n, m) for n, m in candidates.items() if isinstance(m, ImageEmbedder)]
    texts = [m for m in candidates.values() if isinstance(m, TextEmbedder)]
    if images:
        baselines["raw pixels 32×32"] = DownsampledPixels(size=32)
        baselines["colour histogram"] = ColorHistogram(bins=16)
        for name, model in images:
            if model.weights != "random":
                baselines[f"{name}, random weights"] = clone(model).set_params(weights="random")
    if texts:
        from sklearn.feature_extraction.text import TfidfVectorizer

        baselines["TF-IDF"] = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    if not baselines:
        raise ValueError("no automatic baseline for these candidates; pass baselines={...}")
    return baselines


def corrected_paired_ttest(a: np.ndarray, b: np.ndarray, n_train: float, n_test: float
                           ) -> tuple[float, float]:
    """Mean of a - b and the two-sided p-value of Nadeau and Bengio's corrected t-test.

    Examples
    --------
    >>> import numpy as np
    >>> diff, p = corrected_paired_ttest(np.array([.8, .82, .81]), np.array([.7, .71, .7]), 80, 20)
    >>> round(diff, 3), p < 0.01
    (0.107, True)
    """
    differences = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    k = len(differences)
    mean = float(differences.mean())
    variance = float(differences.var(ddof=1)) if k > 1 else 0.0
    if variance == 0.0:
        return mean, (1.0 if mean == 0.0 else 0.0)
    t = mean / np.sqrt((1.0 / k + n_test / n_train) * variance)
    return mean, float(2 * stats.t.sf(abs(t), df=k - 1))


def verdict(difference: float, p_value: float, *, alpha: float, margin: float) -> str:
    """"positive", "negative" or "neutral", as ``VERDICT_RULE`` says.

    Examples
    --------
    >>> verdict(0.05, 0.01, alpha=0.05, margin=0.01), verdict(0.05, 0.2, alpha=0.05, margin=0.01)
    ('positive', 'neutral')
    >>> verdict(-0.05, 0.01, alpha=0.05, margin=0.01), verdict(0.005, 0.0, alpha=0.05, margin=0.01)
    ('negative', 'neutral')
    """
    if p_value < alpha and difference > margin:
        return "positive"
    if p_value < alpha and difference < -margin:
        return "negative"
    return "neutral"

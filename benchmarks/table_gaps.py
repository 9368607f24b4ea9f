"""A real table with gaps, through the one-call DataFrame path, in grouped cross-validation.

1,500 Rotten Tomatoes snippets as a table: the review (about 15 % missing), its word count
(about 10 % missing) and a category (a third missing). Compares the default
``make_embedding_transformer`` (gaps handled) with the hand-written alternative that was the
only way before: a ``TextEmbedder(on_error="zeros")`` column and no number column. Both are
scored by ROC AUC on the same ``GroupKFold(5)`` folds by film.

Run: ``python benchmarks/table_gaps.py``.
"""

from __future__ import annotations

import tempfile

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from sktransfer import TextEmbedder
from sktransfer.compose import make_embedding_transformer
from sktransfer.datasets import load_rotten_tomatoes


def main() -> None:
    reviews = load_rotten_tomatoes(n_samples=1500)
    rng = np.random.default_rng(0)
    n = len(reviews.text)
    frame = pd.DataFrame({"review": reviews.text.astype(object),
                          "n_words": [float(len(t.split())) for t in reviews.text],
                          "era": rng.choice(["old", "new", None], n)})
    frame.loc[rng.random(n) < 0.13, "review"] = np.nan
    frame.loc[rng.random(n) < 0.10, "n_words"] = np.nan
    print("missing share per column:", frame.isna().mean().round(3).to_dict())
    cache = tempfile.mkdtemp()
    by_hand = ColumnTransformer([
        ("review", TextEmbedder(on_error="zeros", cache=cache), "review"),
        ("era", OneHotEncoder(handle_unknown="ignore"), ["era"])])
    for name, columns in (("default make_embedding_transformer",
                           make_embedding_transformer(frame, cache=cache)),
                          ("on_error='zeros' by hand, no numbers", by_hand)):
        model = make_pipeline(columns, LogisticRegression(max_iter=2000))
        scores = cross_val_score(model, frame, reviews.target, groups=reviews.movie,
                                 cv=GroupKFold(5), scoring="roc_auc")
        print(f"{name:40} AUC {scores.mean():.3f} ± {scores.std():.3f}")


if __name__ == "__main__":
    main()

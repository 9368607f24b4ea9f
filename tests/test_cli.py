"""The sktransfer command: embed, models, report; exit codes and messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sktransfer.cli import main


@pytest.fixture
def folder(tmp_path, photos):
    images = tmp_path / "images"
    (images / "nested").mkdir(parents=True)
    for i, photo in enumerate(photos[:3]):
        Image.fromarray(photo[:80, :80]).save(images / f"p{i}.png")
    Image.fromarray(photos[3][:80, :80]).save(images / "nested" / "deep.jpg")
    (images / "notes.txt").write_text("not an image")
    return images


def test_embed_a_folder_to_parquet(folder, tmp_path, capsys):
    out = tmp_path / "features.parquet"
    code = main(["embed", str(folder), "--model", "test_efficientnet", "--weights", "random",
                 "-o", str(out),
                 "--no-progress"])
    assert code == 0
    frame = pd.read_parquet(out)
    assert frame.shape == (4, 1 + 256)
    assert frame["id"].str.endswith(("p0.png", "p1.png", "p2.png", "deep.jpg")).all()
    assert "embedded 4 images" in capsys.readouterr().out


def test_embed_files_to_npy_with_a_layer(folder, tmp_path):
    out = tmp_path / "f.npy"
    files = [str(folder / "p0.png"), str(folder / "p1.png")]
    assert main(["embed", *files, "--model", "test_efficientnet", "--weights", "random",
                 "--layer", "2", "-o",
                 str(out), "--no-progress"]) == 0
    assert np.load(out).shape == (2, 32)


def test_embed_a_table_column(tmp_path, folder):
    table = tmp_path / "table.csv"
    pd.DataFrame({"path": ["images/p0.png", "images/p1.png"],
                  "text": ["a fine film indeed", "dull"]}).to_csv(table, index=False)
    out = tmp_path / "images.parquet"
    assert main(["embed", str(table), "--column", "path", "--model", "test_efficientnet",
                 "--weights", "random",
                 "-o", str(out), "--no-progress"]) == 0  # relative to the table's folder
    assert pd.read_parquet(out).shape == (2, 257)
    out_text = tmp_path / "texts.parquet"
    assert main(["embed", str(table), "--column", "text", "-o", str(out_text)]) == 0
    assert pd.read_parquet(out_text).shape == (2, 385)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["embed", "missing_folder", "-o", "x.npy"], "no such file or folder"),
        (["embed", "{folder}", "-o", "x.csv"], "must end in .parquet or .npy"),
        (["embed", "{table}", "-o", "x.npy"], "say which column"),
        (["embed", "{table}", "--column", "nope", "-o", "x.npy"], "column 'nope' is not in"),
        (["embed", "{folder}/notes.txt", "-o", "x.npy", "--model", "test_efficientnet",
          "--weights", "random"],
         "row 0: .*notes.txt is not an image"),
        (["embed", "{folder}", "-o", "x.npy", "--model", "resnet50"], "HF_HUB_OFFLINE"),
    ],
)
def test_failures_exit_1_with_one_line(args, message, folder, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    table = tmp_path / "t.csv"
    pd.DataFrame({"a": ["x"]}).to_csv(table, index=False)
    args = [a.format(folder=folder, table=table) for a in args]
    assert main([*args, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sktransfer: error:") and "Traceback" not in err
    import re

    assert re.search(message, err), err


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["embed"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_models_lists_licence_and_offline(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "tf_efficientnet_lite0.packaged" in out and "Apache-2.0" in out
    assert "all-MiniLM-L6-v2" in out and "yes" in out


def test_report_on_a_text_table(tmp_path, capsys):
    from sktransfer.datasets import load_rotten_tomatoes

    reviews = load_rotten_tomatoes(n_samples=120)
    table = tmp_path / "reviews.parquet"
    pd.DataFrame({"review": reviews.text, "fresh": reviews.target,
                  "film": reviews.movie}).to_parquet(table)
    assert main(["report", str(table), "--column", "review", "--target", "fresh",
                 "--groups", "film", "--cv", "3"]) == 0
    out = capsys.readouterr().out
    assert "TF-IDF" in out and "Verdict for all-MiniLM-L6-v2:" in out


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "sktransfer"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "embed" in result.stdout

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
        (["embed", "{table}", "-o", "x.npy"], "say which column"),
        (["embed", "{table}", "--column", "nope", "-o", "x.npy"], "column 'nope' is not in"),
        (["embed", "{folder}/notes.txt", "-o", "x.npy", "--model", "test_efficientnet",
          "--weights", "random"],
         "1 of 1 inputs cannot be read; nothing was embedded.*\n  row 0: .*notes.txt is not "
         "an image"),
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


@pytest.mark.parametrize(("args", "message"), [
    (["embed"], "the following arguments are required"),
    (["frobnicate"], "invalid choice"),
    (["embed", "x", "-o", "out.csv"], "must end in .parquet or .npy, got out.csv"),
    (["embed", "x", "-o", "out.npy", "--batch-size", "0"], "must be at least 1, got 0"),
    (["embed", "x", "-o", "out.npy", "--batch-size", "many"], "expected a whole number"),
])
def test_bad_arguments_exit_2(args, message, capsys):
    """As docs/cli.md says: 2 for bad arguments, before any work."""
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


TINY = ["--model", "test_efficientnet", "--weights", "random", "--no-progress"]


def with_bad_files(folder):
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    (folder / "empty.jpg").write_bytes(b"")
    return folder


def test_every_bad_file_is_named_and_nothing_is_written(folder, tmp_path, capsys):
    out = tmp_path / "features.parquet"
    out.write_bytes(b"an earlier result")
    assert main(["embed", str(with_bad_files(folder)), "-o", str(out), *TINY]) == 1
    err = capsys.readouterr().err
    # checked before any work, every bad file at once (not only the empty one)
    assert "2 of 6 inputs cannot be read; nothing was embedded" in err
    assert "empty.jpg is empty" in err and "broken.png is not an image Pillow can read" in err
    (folder / "empty.jpg").unlink()
    (folder / "broken.png").unlink()
    good = (folder / "nested" / "deep.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[:-300])  # a sound header
    assert main(["embed", str(folder), "-o", str(out), *TINY]) == 1
    err = capsys.readouterr().err
    assert "1 of 5 inputs could not be embedded; nothing was written" in err
    assert "truncated.jpg cannot be decoded" in err
    assert out.read_bytes() == b"an earlier result"  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("suffix", [".parquet", ".npy"])
def test_on_error_writes_an_error_column(folder, tmp_path, suffix, capsys):
    out = tmp_path / f"features{suffix}"
    assert main(["embed", str(with_bad_files(folder)), "-o", str(out), "--on-error", "nan",
                 *TINY]) == 0
    assert "2 failed" in capsys.readouterr().out
    if suffix == ".parquet":
        frame = pd.read_parquet(out).set_index("id")
        errors = frame.pop("error")
        bad = [name for name in errors.index if name.endswith(("broken.png", "empty.jpg"))]
        assert sorted(errors[errors != ""].index) == sorted(bad)
        assert "is empty (0 bytes)" in errors[bad].str.cat()
        assert frame.loc[bad].isna().all().all() and frame.drop(bad).notna().all().all()
    else:
        matrix = np.load(out)
        assert matrix.shape == (6, 256) and np.isnan(matrix).all(axis=1).sum() == 2
        sidecar = pd.read_csv(tmp_path / "features.errors.csv")
        assert sorted(Path(i).name for i in sidecar["id"]) == ["broken.png", "empty.jpg"]


def test_a_rerun_with_a_cache_resumes(folder, tmp_path, embedded):
    cache, out = tmp_path / "cache", tmp_path / "f.parquet"
    (folder / "notes.txt").unlink()
    good = (folder / "nested" / "deep.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[:-300])  # passes the header check
    args = ["embed", str(folder), "-o", str(out), "--cache", str(cache), *TINY]
    assert main(args) == 1  # truncated.jpg fails the run; the four good images are cached
    (folder / "truncated.jpg").unlink()
    assert main(args) == 0
    assert embedded == [5]  # the rerun finds every image in the cache: nothing embedded twice
    assert pd.read_parquet(out).shape == (4, 257)


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


PEAK_RUN = ("import resource, sys; from sktransfer.cli import main; code = main(sys.argv[1:]); "
            "print('peak_mb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, code)")


@pytest.mark.slow
def test_embed_memory_is_flat_from_10000_to_40000_images(tmp_path):
    """Output is streamed a chunk at a time: peak RSS must not grow with the image count
    (before streaming: 1.40 GB at 10,000 and 1.52 GB at 40,000, everything held to the end)."""
    rng = np.random.default_rng(0)
    peaks = {}
    for n in (10_000, 40_000):
        folder = tmp_path / f"n{n}"
        folder.mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
                folder / f"{i:05d}.png")
        out = tmp_path / f"n{n}.parquet"
        result = subprocess.run([sys.executable, "-c", PEAK_RUN, "embed", str(folder), "-o",
                                 str(out), *TINY], capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-2000:]
        peak, code = result.stdout.strip().splitlines()[-1].split()[1:]
        assert code == "0"
        peaks[n] = int(peak)
        assert pd.read_parquet(out, columns=["id"]).shape == (n, 1)
    assert peaks[40_000] - peaks[10_000] < 100, peaks

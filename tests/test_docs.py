"""Every Python and shell block of the README and docs/ runs, in order, page by page."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```(python|bash)\n(.*?)```", flags=re.DOTALL)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_code_runs(page, tmp_path, monkeypatch, capsys):
    blocks = BLOCK.findall(page.read_text())
    if page.name in ("api.md", "performance.md"):  # reference and measured tables only
        assert blocks == []
        return
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"__{page.stem}__"}
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    printed = []
    for language, code in blocks:
        if language == "python":
            exec(compile(code, str(page), "exec"), namespace)
        else:
            result = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=tmp_path,
                                    env=env, capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, f"{code}\n{result.stdout}\n{result.stderr}"
            printed.append(result.stdout)
    printed.append(capsys.readouterr().out)
    output = "".join(printed)
    assert output.strip(), f"{page.name} ran but printed nothing"
    if page.name == "README.md":
        assert "balanced accuracy" in output


def test_api_reference_is_up_to_date():
    spec = importlib.util.spec_from_file_location("gen_api", ROOT / "docs" / "gen_api.py")
    gen_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_api)
    assert (ROOT / "docs" / "api.md").read_text() == gen_api.render(), (
        "docs/api.md is stale: run python docs/gen_api.py")


def test_every_public_name_is_in_the_api_reference():
    import sktransfer

    api = (ROOT / "docs" / "api.md").read_text()
    missing = [name for name in sktransfer.__all__
               if f"sktransfer.{name}`" not in api and name not in (
                   "list_backbones", "register_backbone", "BackboneSpec")]
    assert missing == []


def test_every_module_the_contributors_page_names_exists():
    """The table of docs/contributing.md names real modules and folders, and every module of
    the package appears in it (directly, or inside a folder it names)."""
    page = (ROOT / "docs" / "contributing.md").read_text()
    table = page.split("## Where each concern lives")[1].split("\n## ")[0]
    package = ROOT / "sktransfer"
    named = set(re.findall(r"`([\w/]+(?:\.py|/))`", table))
    folders = {name for name in named if name.endswith("/")}
    missing = [name for name in named if not (package / name).exists()
               and not any((package / folder / name).exists() for folder in folders)]
    assert missing == []
    modules = {path.relative_to(package).as_posix() for path in package.rglob("*.py")
               if path.name != "__init__.py"}
    unnamed = [module for module in modules if module not in named
               and not any(module.startswith(folder) for folder in folders)]
    assert unnamed == []

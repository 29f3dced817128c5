"""The assets (icons, example problems) ship with every install.

The wheel's contents are computed by setuptools itself from pyproject.toml (its `build_py`
step, which decides what goes into the wheel; nothing is built or written), the PyInstaller
spec is checked to put the assets where a wheel does, and `app.asset_files` is loaded from
an installed-style folder to show it finds them there as it does in the checkout.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from engine.errors import ThoughtscopeError

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
PACKAGE_ROOTS = ("app", "widgets", "engine")


def _build_py(monkeypatch: pytest.MonkeyPatch) -> Any:
    """setuptools' build_py command, configured from pyproject.toml as a wheel build is."""
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    monkeypatch.chdir(ROOT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "[tool.setuptools] is still beta" on old ones
        dist = Distribution()
        dist.script_name = "setup.py"
        apply_configuration(dist, ROOT / "pyproject.toml")
        cmd = dist.get_command_obj("build_py")
        cmd.ensure_finalized()
    return cmd


def test_the_wheel_carries_every_file_under_assets(monkeypatch: pytest.MonkeyPatch) -> None:
    cmd = _build_py(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a data folder setuptools would stop shipping fails
        outputs = {
            Path(out).relative_to(cmd.build_lib).as_posix()
            for out in cmd.get_outputs(include_bytecode=False)
        }
    assets = {
        "app/assets/" + path.relative_to(ASSETS).as_posix()
        for path in ASSETS.rglob("*")
        if path.is_file()
    }
    assert "app/assets/problems/examples.jsonl" in assets
    assert "app/assets/icons/thoughtscope.svg" in assets
    assert assets <= outputs, sorted(assets - outputs)
    modules = {
        path.relative_to(ROOT).as_posix()
        for root in PACKAGE_ROOTS
        for path in (ROOT / root).rglob("*.py")
    }
    assert "app/asset_files.py" in modules
    assert modules <= outputs, sorted(modules - outputs)


def test_every_package_and_asset_folder_is_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyproject.toml lists the packages (the assets need a mapping `find` cannot give): a
    new package or assets folder must be added there, or the wheel would lack it."""
    cmd = _build_py(monkeypatch)
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for root in PACKAGE_ROOTS
        for init in (ROOT / root).rglob("__init__.py")
    }
    on_disk |= {"app.assets"} | {
        ".".join(("app", "assets", *d.relative_to(ASSETS).parts))
        for d in ASSETS.rglob("*")
        if d.is_dir() and d.name != "__pycache__"
    }
    assert set(cmd.packages) == on_disk


def test_the_bundle_puts_the_assets_where_a_wheel_does() -> None:
    spec = (ROOT / "packaging" / "thoughtscope.spec").read_text(encoding="utf-8")
    targets = re.findall(r'\(str\(ROOT / "assets"\), "([^"]+)"\)', spec)
    assert targets == ["app/assets"]


def _load_asset_files(app_dir: Path) -> ModuleType:
    """app/asset_files.py as imported from `app_dir` (an installed copy of the package)."""
    spec = importlib.util.spec_from_file_location("asset_files_copy", app_dir / "asset_files.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_assets_are_found_in_an_installed_layout(tmp_path: Path) -> None:
    """site-packages/app/assets, as the wheel installs it (and the bundle's _internal/app)."""
    app_dir = tmp_path / "site-packages" / "app"
    app_dir.mkdir(parents=True)
    shutil.copy2(ROOT / "app" / "asset_files.py", app_dir)
    shutil.copytree(ASSETS, app_dir / "assets")
    asset_files = _load_asset_files(app_dir)
    assert asset_files.assets_dir() == app_dir / "assets"
    assert asset_files.asset_path("problems", "examples.jsonl").is_file()
    assert asset_files.asset_path("icons", "thoughtscope.svg").is_file()


def test_assets_are_found_in_the_checkout() -> None:
    from app.asset_files import asset_path, assets_dir
    from app.problems import default_examples

    assert assets_dir() == ASSETS
    assert asset_path("icons", "thoughtscope.svg").is_file()
    assert default_examples()


def test_missing_assets_are_a_one_line_error(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    shutil.copy2(ROOT / "app" / "asset_files.py", app_dir)
    asset_files = _load_asset_files(app_dir)
    with pytest.raises(ThoughtscopeError, match="assets are missing"):
        asset_files.asset_path("icons", "thoughtscope.svg")

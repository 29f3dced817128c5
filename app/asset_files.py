"""Where the files that ship with Thoughtscope (icons, example problems) are, for every install.

The repository keeps them in `assets/` beside the `app` package; an editable install and a
run from the checkout read them there. An installed copy carries them inside the package as
`app/assets/`: the wheel installs `assets/` as package data of `app` (pyproject.toml maps
it), and the PyInstaller bundle puts them at the same place (packaging/thoughtscope.spec).
This module is the only place that knows either layout.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import ThoughtscopeError

_APP_PACKAGE = Path(__file__).resolve().parent
ASSET_DIRS = (
    _APP_PACKAGE / "assets",  # installed: wheel, PyInstaller bundle
    _APP_PACKAGE.parent / "assets",  # the source checkout (editable install)
)


def assets_dir() -> Path:
    """The folder holding icons/ and problems/; raises ThoughtscopeError when none exists."""
    for candidate in ASSET_DIRS:
        if candidate.is_dir():
            return candidate
    raise ThoughtscopeError(
        "Thoughtscope's assets are missing (looked in "
        + " and ".join(str(d) for d in ASSET_DIRS)
        + "): reinstall the package"
    )


def asset_path(*parts: str) -> Path:
    """A file under the assets folder, e.g. `asset_path("icons", "thoughtscope.svg")`."""
    return assets_dir().joinpath(*parts)

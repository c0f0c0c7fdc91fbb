"""The folders fotoowl reads at run time: `sql/` (migrations), `templates/` and `static/`.

They live at the top of the repository and ship inside the package: pyproject.toml maps them to
`fotoowl/sql/`, `fotoowl/templates/` and `fotoowl/static/` in the wheel, where `importlib.resources`
finds them wherever the wheel was installed.

An editable install (`make install`) cannot map them: setuptools' editable finder only imports a
remapped sub-package that has an `__init__.py` (pypa/setuptools#4943), and neither can a checkout
run from `PYTHONPATH=src`. There the checkout's own top-level folders are used, which also makes
an edited template or a new migration visible without reinstalling.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

FOLDERS = ("sql", "templates", "static")

# src/fotoowl/resources.py -> the top of the checkout it belongs to (meaningless in an installed wheel).
_CHECKOUT = Path(__file__).resolve().parents[2]


def folder(name: str) -> Path:
    """`sql`, `templates` or `static` as a directory on disk.

    A real path, not just a Traversable: aiohttp's add_static and jinja's FileSystemLoader read the
    file system. A wheel installed into site-packages gives one; a zipped install is not supported.
    """
    if name not in FOLDERS:
        raise ValueError(f"unknown resource folder {name!r}; expected one of {', '.join(FOLDERS)}")
    shipped = files("fotoowl").joinpath(name)
    if shipped.is_dir():
        if not isinstance(shipped, Path):
            raise FileNotFoundError(
                f"the {name}/ folder of fotoowl is not on disk ({shipped!r}); "
                "install the wheel into a directory, not a zip"
            )
        return shipped
    # Only a source checkout (recognised by its pyproject.toml), never a folder that happens to sit
    # two levels above an installed package.
    if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / name).is_dir():
        return _CHECKOUT / name
    raise FileNotFoundError(
        f"the {name}/ folder is missing: it is neither inside the installed fotoowl "
        f"package nor at the top of a source checkout ({_CHECKOUT})"
    )

"""Where the node finds its bundled files (web pages, default config, presets).

From a source checkout (editable install) they are the repository's top-level `web/` and
`configs/`; an installed wheel carries copies under `livegen/_data/`.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def bundled_dir(name: str) -> Path:
    """The directory `name` ("web" or "configs") from the checkout, else from the wheel."""
    checkout = _PACKAGE_DIR.parent.parent / name
    if (_PACKAGE_DIR.parent.parent / "pyproject.toml").is_file() and checkout.is_dir():
        return checkout
    return _PACKAGE_DIR / "_data" / name

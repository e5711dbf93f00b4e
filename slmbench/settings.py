"""Where things live: the model/artifact cache, the results dir, external data. All overridable by env."""
from __future__ import annotations

import os
from pathlib import Path

import platformdirs

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent  # valid for a source checkout / editable install


def cache_dir() -> Path:
    """Model conversions, bandwidth figures, build artifacts. SLMBENCH_CACHE_DIR overrides the user cache dir."""
    p = Path(os.environ.get("SLMBENCH_CACHE_DIR") or platformdirs.user_cache_dir("slmbench"))
    p.mkdir(parents=True, exist_ok=True)
    return p


def data_dir() -> Path | None:
    """Offline benchmark data and corpora (SLMBENCH_DATA_DIR). None when unset or missing."""
    env = os.environ.get("SLMBENCH_DATA_DIR")
    if env:
        p = Path(env).expanduser()
        return p if p.is_dir() else None
    return None


def devices_dir() -> Path:
    """Device profiles (YAML). SLMBENCH_DEVICES_DIR overrides the repository's `devices/`."""
    env = os.environ.get("SLMBENCH_DEVICES_DIR")
    return Path(env) if env else REPO_DIR / "devices"


def default_out_dir() -> Path:
    return Path(os.environ.get("SLMBENCH_OUT", "reports"))

"""A tqdm progress bar that is quiet when stderr is not a terminal or CI=true."""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm


def progress_enabled(requested: bool | None = None) -> bool:
    """``requested`` if given, else on only for an interactive terminal outside CI."""
    if requested is not None:
        return requested
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return False
    return sys.stderr.isatty()


def progress_bar(total: int, desc: str, *, enabled: bool | None = None, initial: int = 0) -> Any:
    """A tqdm bar over ``total`` units (disabled per ``progress_enabled``)."""
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        disable=not progress_enabled(enabled),
        leave=False,
        dynamic_ncols=True,
    )

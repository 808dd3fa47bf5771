"""Progress bars: live on a terminal, a line every 30 s in a log file."""

from __future__ import annotations

import sys


def bar(total: int, desc: str, *, enabled: bool = True, unit: str = "it"):
    from tqdm.auto import tqdm

    tty = sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=not enabled,
        leave=tty,
        mininterval=0.2 if tty else 30.0,
        dynamic_ncols=True,
    )

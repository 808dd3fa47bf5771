"""What every benchmark script does with its figures: print the markdown, and with ``--json PATH`` write the
figures there and the markdown beside it (``PATH`` with ``.md``)."""

from __future__ import annotations

import json
from pathlib import Path


def report(figures, markdown: str, json_path: str | Path | None) -> None:
    print(markdown)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(figures, indent=1) + "\n")
        Path(json_path).with_suffix(".md").write_text(markdown)

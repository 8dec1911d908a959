"""What every benchmark module ends with: the machine it ran on, and its table written out."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """The cores this process may use, the load average when asked, and the Python version."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {
        "summary": f"{cores} cores, load {load:.1f}, Python {platform.python_version()}",
        "cores": cores,
        "load": load,
        "python": platform.python_version(),
    }


def publish(out: Path, name: str, table: str, results: dict[str, Any]) -> None:
    """Writes `name.md` (the table) and `name.json` (the figures) into `out`, and prints both."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(table)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table)
    print(f"written to {out / f'{name}.md'} and {out / f'{name}.json'}")

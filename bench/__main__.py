"""`python -m bench`: runs every benchmark module in turn, each reading the same arguments."""

from __future__ import annotations

import importlib
import sys

MODULES = (
    "bench.startup",
    "bench.server",
    "bench.prepare",
    "bench.load",
    "bench.operations",
    "bench.audit",
    "bench.spark",
    "bench.release",
    "bench.reports",
    "bench.blind",
)


def main() -> int:
    """Runs each module's `main()` (they read `sys.argv`); a module not written yet is skipped."""
    status = 0
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            print(f"note: {name} is not there yet; skipped", flush=True)
            continue
        status = max(status, int(module.main() or 0))
    return status


if __name__ == "__main__":
    sys.exit(main())

"""Run every benchmark module in this package (each one's ``main()``), in name order."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main(only: list[str]) -> None:
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_"))
    for name in names:
        if only and name not in only:
            continue
        module = importlib.import_module(f"{__package__}.{name}")
        if callable(getattr(module, "main", None)):
            print(f"== bench.{name}", flush=True)
            module.main()


if __name__ == "__main__":
    main(sys.argv[1:])

"""`python -m mlops COMMAND ...`: one entry point for the MLOps command lines.

Commands: train, evaluate, registry, validate (each takes `--help`); `python -m mlops.<command>` works the same.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": "mlops.train",
    "evaluate": "mlops.evaluate",
    "registry": "mlops.registry",
    "validate": "mlops.validate",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m mlops {{{','.join(COMMANDS)}}} [options]   (add --help after a command)")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    result = importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

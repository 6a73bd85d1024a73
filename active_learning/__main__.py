"""`python -m active_learning export --out DIR`: the final expert labels as a training folder (DIR/manifest.csv and
DIR/images/<case_id>.png, the cases' kept pixels) that `python -m mlops.train --data DIR` reads, and the nodule
reviews beside them (DIR/nodule_manifest.csv, read by labelled_data.read_expert_nodule_reads). Database, PHI key and
artifact folder come from settings, as for the backend."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from active_learning.export import MANIFEST_NAME, NODULE_MANIFEST_NAME
from active_learning.loop import LearningLoop
from active_learning.records import QueuePolicy
from settings import get_settings
from storage import init_storage


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m active_learning", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write the final expert labels as manifest.csv + images/")
    export.add_argument("--out", type=Path, required=True, help="folder to write (created when missing)")
    args = parser.parse_args(argv)

    settings = get_settings()
    storage = init_storage(settings)
    try:
        loop = LearningLoop(storage.database, QueuePolicy.from_settings(settings))
        result = loop.write_export(storage.artifacts, args.out)
    finally:
        storage.database.dispose()
    print(f"Wrote {result.written} expert-labelled image(s) and {result.out / MANIFEST_NAME}.")
    print(f"Wrote {result.nodule_written} nodule review(s) to {result.out / NODULE_MANIFEST_NAME}.")
    if result.missing_pixels:
        print(
            f"Left out {len(result.missing_pixels)} case(s) whose pixels were never kept (stored before that): "
            f"{', '.join(result.missing_pixels[:5])}{' ...' if len(result.missing_pixels) > 5 else ''}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m services.router.train --city <city>``: train the pack's classifier.

Writes a versioned artefact under the models directory and prints its path and
metadata. ``--extra FILE`` adds labelled examples beyond the pack's own (e.g.
the triage decisions exported by ``services.router.export_examples``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from services.router.cli import add_pack_arguments, open_pack
from services.router.datasets import DataError
from services.router.model_store import ModelError, train_pack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pack_arguments(parser)
    parser.add_argument(
        "--extra", type=Path, action="append", default=[], help="more labelled examples (CSV)"
    )
    args = parser.parse_args(argv)
    pack = open_pack(args, "router-train")
    try:
        trained = train_pack(pack, args.models_dir, args.extra)
    except (DataError, ModelError, ValueError) as error:
        print(f"cannot train: {error}", file=sys.stderr)
        return 2
    meta = {k: v for k, v in trained.meta.items() if k != "reliability"}
    print(json.dumps({"path": str(trained.path), **meta}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the router's command-line tools share: picking a pack and where models live."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from services.router.model_store import default_models_dir
from shared.citypack import CityPack, load_pack_or_exit
from shared.logs import configure_logging
from shared.settings import DEFAULT_CITIES_DIR


def add_pack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--city", required=True, help="city pack name, e.g. nyc or demo-zh")
    parser.add_argument(
        "--cities-dir",
        type=Path,
        default=Path(os.environ.get("CIVIC_CITIES_DIR") or DEFAULT_CITIES_DIR),
        help="where city packs live (CIVIC_CITIES_DIR)",
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=default_models_dir(),
        help="where trained models are kept (CIVIC_MODELS_DIR; default .cache/models)",
    )


def open_pack(args: argparse.Namespace, tool: str) -> CityPack:
    # Logs go to stderr-free JSON on stdout like the services; warnings only, so a
    # tool's own output stays readable and its last line stays the result.
    configure_logging(tool, os.environ.get("CIVIC_LOG_LEVEL", "warning"))
    return load_pack_or_exit(args.cities_dir / args.city)

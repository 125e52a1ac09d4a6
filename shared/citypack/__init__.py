"""City packs: a city is configuration (``deploy/cities/<city>/``), not code."""

from shared.citypack.loader import CityPack, PackError, load_pack, load_pack_or_exit

__all__ = ["CityPack", "PackError", "load_pack", "load_pack_or_exit"]

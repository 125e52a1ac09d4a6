"""Training a pack's classifier into a versioned artefact, and loading it back.

The artefact lives outside git, under ``<models_dir>/<city>/<version>/``:
``model.pkl`` (the fitted classifier) and ``meta.json`` (what it was trained on,
when, how long it took, the SHA-256 of ``model.pkl``). The version is a digest
of everything the model depends on: the examples, the taxonomy, the routes, the
jurisdictions, the classifier settings and the library versions. A changed pack
therefore gets a new version, and the service trains it at start if missing.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import pickle
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sklearn
import structlog

from services.router import classifier, datasets, domain
from services.router.classifier import MODELS, Example, warm_up
from services.router.datasets import Row, training_files, training_rows
from shared.citypack import CityPack
from shared.settings import REPO_ROOT

log = structlog.get_logger(__name__)

# Bump when the artefact's layout or the classifier code changes meaning.
ARTEFACT_FORMAT = "3"
PACK_FILES = ("taxonomy.yaml", "routes.yaml", "jurisdictions.geojson")
TRAINING_CODE = (classifier, datasets, domain, sys.modules[__name__])


class ModelError(RuntimeError):
    pass


@dataclass(frozen=True)
class Trained:
    model: domain.Model
    meta: dict[str, Any]
    path: Path | None


def pack_version(pack: CityPack, extra: Sequence[Path] = ()) -> str:
    digest = hashlib.sha256()
    digest.update(f"format {ARTEFACT_FORMAT} sklearn {sklearn.__version__}\n".encode())
    for module in TRAINING_CODE:  # a change to how models are made makes a new version
        digest.update(Path(module.__file__ or "").read_bytes())
    for name in PACK_FILES:
        path = pack.directory / name
        digest.update(name.encode() + b"\0")
        if path.is_file():
            digest.update(path.read_bytes())
    for path in [*training_files(pack), *extra]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def examples_of(rows: Sequence[Row]) -> list[Example]:
    """Identical (text, category) rows fold into one weighted example: same fit, less work."""
    weights: dict[tuple[str, str], float] = defaultdict(float)
    for row in rows:
        if row.category:
            weights[(row.classifier_text, row.category)] += row.weight
    return [Example(text, category, weight) for (text, category), weight in weights.items()]


def fit(pack: CityPack, rows: Sequence[Row], version: str) -> domain.Model:
    """Train the pack's classifier on ``rows`` and measure each route against their leads."""
    settings = pack.routes.classifier
    trainer = MODELS.get(settings.model)
    if trainer is None:
        raise ModelError(f"unknown classifier model {settings.model!r} (known: {sorted(MODELS)})")
    warm_up(settings.words)
    fitted = trainer(examples_of(rows), list(pack.categories.values()), settings.words)
    return domain.Model(fitted, version, route_reliability(pack, rows))


def route_reliability(pack: CityPack, rows: Sequence[Row]) -> dict[str, float]:
    """Per route: (right + 1) / (seen + 1) over labelled rows that take it.

    A route the examples always agree with stays at 1; one whose examples went to
    other departments (the data say the category alone does not settle who takes
    it) lowers the confidence of every decision through it.
    """
    seen: dict[str, float] = defaultdict(float)
    right: dict[str, float] = defaultdict(float)
    for row in rows:
        if not row.category:
            continue
        request = row.request(pack)
        jurisdiction, _ = domain.locate(request, pack)
        if jurisdiction.method == "fallback" and pack.routes.fallback.when_no_jurisdiction:
            continue  # the place, not the route, decided who took it
        hit = domain.route_of(request, pack, row.category, jurisdiction)
        if hit is None or hit.lead is None:
            continue
        seen[hit.route.id] += row.weight
        right[hit.route.id] += row.weight if hit.lead == row.expected_lead else 0.0
    return {rid: (right[rid] + 1) / (seen[rid] + 1) for rid in seen}


def train_pack(pack: CityPack, models_dir: Path, extra: Sequence[Path] = ()) -> Trained:
    """Train on the pack's examples (plus ``extra`` files) and store the artefact."""
    version = pack_version(pack, extra)
    started = time.perf_counter()
    rows = training_rows(pack, list(extra))
    model = fit(pack, rows, version)
    seconds = time.perf_counter() - started
    meta = {
        "city": pack.name,
        "version": version,
        "model": pack.routes.classifier.model,
        "words": pack.routes.classifier.words,
        "examples": len(rows),
        "weighted_examples": sum(r.weight for r in rows),
        "files": [p.name for p in [*training_files(pack), *extra]],
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "training_seconds": round(seconds, 3),
        "reliability": model.reliability,
        "sklearn": sklearn.__version__,
    }
    path = _save(models_dir / pack.name / version, model, meta)
    log.info(
        "classifier trained",
        city=pack.name,
        version=version,
        examples=len(rows),
        seconds=round(seconds, 2),
    )
    return Trained(model, meta, path)


def _save(target: Path, model: domain.Model, meta: dict[str, Any]) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".training-", dir=target.parent))
    try:
        blob = pickle.dumps(model.classifier, protocol=pickle.HIGHEST_PROTOCOL)
        (staging / "model.pkl").write_bytes(blob)
        meta = {**meta, "sha256": hashlib.sha256(blob).hexdigest()}
        (staging / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
        try:
            os.rename(staging, target)  # atomic: a replica training at once loses the race
        except OSError:
            if not (target / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load(path: Path) -> Trained:
    meta_file, blob_file = path / "meta.json", path / "model.pkl"
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        blob = blob_file.read_bytes()
    except (OSError, ValueError) as error:
        raise ModelError(f"{path}: unreadable model artefact: {error}") from error
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        raise ModelError(f"{blob_file}: checksum does not match meta.json (corrupt or altered)")
    # The checksum above ties the pickle to the meta.json this service wrote itself.
    fitted = pickle.loads(blob)  # noqa: S301
    warm_up(meta.get("words", "latin"))
    model = domain.Model(fitted, meta["version"], dict(meta.get("reliability") or {}))
    return Trained(model, meta, path)


def load_or_train(pack: CityPack, models_dir: Path) -> Trained:
    """The artefact for the pack as it is now; trained first if there is none."""
    path = models_dir / pack.name / pack_version(pack)
    trained: Trained | None = None
    if (path / "meta.json").is_file():
        try:
            trained = load(path)
        except ModelError as error:
            log.warning("model artefact unusable; training again", error=str(error))
            shutil.rmtree(path, ignore_errors=True)
    if trained is None:
        log.info("no model artefact for this pack version; training", city=pack.name)
        trained = train_pack(pack, models_dir)
    # The model's many long-lived objects (vocabularies) need not be scanned by every
    # garbage collection: that keeps collection pauses out of routing times.
    gc.collect()
    gc.freeze()
    return trained


def default_models_dir() -> Path:
    """``CIVIC_MODELS_DIR``, else ``.cache/models`` in the repository (outside git)."""
    configured = os.environ.get("CIVIC_MODELS_DIR")
    return Path(configured) if configured else REPO_ROOT / ".cache" / "models"

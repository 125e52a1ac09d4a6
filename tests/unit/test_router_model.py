"""The classifier and its versioned artefact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from services.router.classifier import MODELS, KeywordClassifier, TfidfLinear
from services.router.datasets import read_rows
from services.router.model_store import (
    ModelError,
    load,
    load_or_train,
    pack_version,
    train_pack,
)
from shared.citypack import CityPack, load_pack
from shared.settings import DEFAULT_CITIES_DIR


@pytest.fixture(scope="module")
def pack_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("cities") / "demo-zh"
    shutil.copytree(DEFAULT_CITIES_DIR / "demo-zh", target)
    return target


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def trained_dir(pack_copy: Path, models: Path) -> Path:
    trained = train_pack(load_pack(pack_copy), models)
    assert trained.path is not None
    return trained.path


def test_artefact_is_versioned_under_city_and_records_what_it_learnt_from(
    pack_copy: Path, models: Path, trained_dir: Path
) -> None:
    pack = load_pack(pack_copy)
    assert trained_dir == models / "demo-zh" / pack_version(pack)
    meta = json.loads((trained_dir / "meta.json").read_text())
    train_rows = len(read_rows(pack.examples_dir / "train.csv", "labelled", pack))
    assert meta["examples"] == train_rows  # the held-out file is never trained on
    assert meta["files"] == ["train.csv"]
    assert meta["model"] == "tfidf-linear"
    assert meta["training_seconds"] > 0


def test_the_fast_path_scores_exactly_as_sklearn(trained_dir: Path, pack_copy: Path) -> None:
    classifier = load(trained_dir).model.classifier
    assert isinstance(classifier, TfidfLinear)
    pack = load_pack(pack_copy)
    for row in read_rows(pack.examples_dir / "holdout.csv", "labelled", pack)[:40]:
        expected = classifier.features.transform([row.text]).toarray()
        assert np.allclose(classifier.vectorize(row.text).toarray(), expected)
        sklearn_best = classifier.model.predict_proba(classifier.features.transform([row.text]))
        category, probability = classifier.predict(row.text).best
        assert probability == pytest.approx(sklearn_best.max())
        assert category == classifier.model.classes_[sklearn_best.argmax()]


def test_a_changed_pack_gets_a_new_version_and_is_trained_at_load(
    pack_copy: Path, models: Path, trained_dir: Path
) -> None:
    before = pack_version(load_pack(pack_copy))
    extra = pack_copy / "examples" / "more.csv"
    extra.write_text(
        "text,category,expected_lead\n小区里的路灯坏了好几个月,housing.property_management,housing_bureau\n",
        encoding="utf-8",
    )
    try:
        pack = load_pack(pack_copy)
        assert pack_version(pack) != before
        trained = load_or_train(pack, models)
        assert trained.meta["files"] == ["more.csv", "train.csv"]
        again = load_or_train(pack, models)  # now there: loaded, not trained
        assert again.meta["trained_at"] == trained.meta["trained_at"]
    finally:
        extra.unlink()


def test_a_tampered_artefact_is_refused(trained_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(trained_dir, copy)
    blob = (copy / "model.pkl").read_bytes()
    (copy / "model.pkl").write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(ModelError, match="checksum does not match"):
        load(copy)


def test_keyword_classifier_is_a_drop_in_model(pack_copy: Path) -> None:
    pack: CityPack = load_pack(pack_copy)
    classifier = MODELS["keywords"]([], list(pack.categories.values()), "jieba")
    assert isinstance(classifier, KeywordClassifier)
    prediction = classifier.predict("暖气不热，供暖公司不管")
    assert prediction.best[0] == "utilities.heating"
    assert prediction.features[:2] == ["keyword:暖气", "keyword:供暖"]

"""Classifiers: text → ranked categories with probabilities and the features behind them.

Pluggable: a pack names its model in ``routes.yaml`` (``classifier.model``);
:data:`MODELS` maps that name to a trainer. The default, ``tfidf-linear``, is
TF-IDF over character n-grams plus words (jieba for Chinese) with a logistic
regression. ``keywords`` counts the taxonomy's keywords (a cold start that
needs no examples).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import jieba
import numpy as np
from scipy import sparse
from sklearn import set_config
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion

from shared.citypack.taxonomy import Category

# One request at a time: skip sklearn's finiteness scans (TF-IDF of text is always finite).
set_config(assume_finite=True, skip_parameter_validation=True)
# jieba narrates its dictionary loading on stderr; logs stay JSON.
jieba.setLogLevel(logging.WARNING)

_LATIN_WORD = re.compile(r"[^\W_]+", re.UNICODE)
TOP_FEATURES = 3


@dataclass(frozen=True)
class Prediction:
    ranked: list[tuple[str, float]]  # (category id, probability), best first
    features: list[str]  # what pushed the best category up, strongest first

    @property
    def best(self) -> tuple[str, float]:
        return self.ranked[0] if self.ranked else ("", 0.0)


class Classifier(Protocol):
    name: str

    def predict(self, text: str) -> Prediction: ...


@dataclass(frozen=True)
class Example:
    text: str
    category: str
    weight: float = 1.0


Trainer = Callable[[Sequence[Example], Sequence[Category], str], Classifier]


def words_zh(text: str) -> list[str]:
    """jieba words, without punctuation and spaces.

    Dictionary words only (no HMM guessing of new words): a guessed word is
    rarely in the vocabulary, the character n-grams cover its characters, and
    the HMM was nearly half the segmentation's time (248 → 135 µs a request on
    the bench's texts). Holdout accuracy of the demo-zh pack went 0.933 →
    0.948, its 5-fold CV 0.876 → 0.867.
    """
    return [w for w in jieba.lcut(text.lower(), HMM=False) if _LATIN_WORD.search(w)]


def words_latin(text: str) -> list[str]:
    return _LATIN_WORD.findall(text.lower())


WORDS: dict[str, Callable[[str], list[str]]] = {"jieba": words_zh, "latin": words_latin}


def warm_up(words: str) -> None:
    """Load jieba's dictionary now (about a second) rather than on the first request."""
    if words == "jieba":
        jieba.initialize()


class TfidfLinear:
    """Character n-grams + words, TF-IDF weighted, multinomial logistic regression."""

    name = "tfidf-linear"

    def __init__(self, words: str) -> None:
        self.words = words
        self.features = FeatureUnion(
            [
                (
                    "chars",
                    TfidfVectorizer(
                        analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True, min_df=1
                    ),
                ),
                (
                    "words",
                    TfidfVectorizer(
                        analyzer=WORDS[words], ngram_range=(1, 1), sublinear_tf=True, min_df=1
                    ),
                ),
            ]
        )
        self.model = LogisticRegression(C=400.0, max_iter=5000)
        self.names: np.ndarray = np.array([])

    def fit(self, examples: Sequence[Example]) -> TfidfLinear:
        texts = [e.text for e in examples]
        labels = [e.category for e in examples]
        weights = np.array([e.weight for e in examples], dtype=float)
        matrix = self.features.fit_transform(texts)
        self.model.fit(matrix, labels, sample_weight=weights)
        self.names = self.features.get_feature_names_out()
        self._prepare()
        return self

    def vectorize(self, text: str) -> sparse.csr_matrix:
        """The TF-IDF row of one text, as ``self.features.transform([text])`` computes it."""
        columns, values = self._row(text)
        return sparse.csr_matrix((values, columns, [0, len(columns)]), shape=(1, self._width))

    def _row(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The non-zero columns (ascending) and values of the text's TF-IDF row.

        sklearn's per-call checks cost about a millisecond per vectorizer for a
        single text; the fitted analyzers, vocabularies and idf weights give the
        same row in a fraction of it (a unit test holds the two equal).
        """
        column_parts: list[np.ndarray] = []
        value_parts: list[np.ndarray] = []
        for analyze, vocabulary, idf, offset in self._fast:
            counts: dict[int, int] = {}
            for token, count in Counter(analyze(text)).items():  # C-speed counting
                index = vocabulary.get(token)
                if index is not None:
                    counts[index] = count
            if not counts:
                continue
            keys = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
            tf = np.fromiter(counts.values(), dtype=float, count=len(counts))
            weights = (1.0 + np.log(tf)) * idf[keys]  # sublinear tf x idf
            weights /= np.sqrt(np.dot(weights, weights))  # l2 per vectorizer
            column_parts.append(keys + offset)
            value_parts.append(weights)
        if not column_parts:
            return np.empty(0, dtype=np.int64), np.empty(0)
        columns = np.concatenate(column_parts)
        order = np.argsort(columns)
        return columns[order], np.concatenate(value_parts)[order]

    def _prepare(self) -> None:
        fast, offset = [], 0
        for _, vectorizer in self.features.transformer_list:
            fast.append(
                (vectorizer.build_analyzer(), vectorizer.vocabulary_, vectorizer.idf_, offset)
            )
            offset += len(vectorizer.vocabulary_)
        self._fast = fast
        self._width = offset
        # One row per feature, a column per class: a request's features pick their rows.
        self._weights_by_feature = np.ascontiguousarray(self.model.coef_.T)

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state.pop("_fast", None)  # analyzers are rebuilt after loading
        state.pop("_weights_by_feature", None)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._prepare()

    def predict(self, text: str) -> Prediction:
        columns, values = self._row(text)
        # A dot product over the row's few non-zero columns; no sparse matrix per call.
        scores = values @ self._weights_by_feature[columns] + self.model.intercept_
        probabilities = _softmax(scores)
        order = np.argsort(probabilities)[::-1]
        classes = self.model.classes_
        ranked = [(str(classes[i]), float(probabilities[i])) for i in order[:5]]
        return Prediction(ranked, self._top_features(columns, values, int(order[0])))

    def _top_features(self, columns: np.ndarray, values: np.ndarray, class_index: int) -> list[str]:
        # For a linear model, a feature's push toward a class is value x weight.
        if len(columns) == 0:
            return []
        weights = self._weights_by_feature[columns]
        pushes = values * weights[:, class_index if weights.shape[1] > 1 else 0]
        best = np.argsort(pushes)[::-1][:TOP_FEATURES]
        return [_feature_label(str(self.names[columns[i]])) for i in best if pushes[i] > 0]


def _softmax(scores: np.ndarray) -> np.ndarray:
    """Multinomial logistic regression's probabilities from its decision scores."""
    flat = np.asarray(scores).ravel()
    if flat.size == 1:  # two classes: sklearn keeps one score column
        flat = np.array([-flat[0], flat[0]])
    exp = np.exp(flat - flat.max())
    return exp / exp.sum()


def _feature_label(name: str) -> str:
    source, _, feature = name.partition("__")
    shown = feature if feature.strip() == feature else repr(feature)
    return f"{source}:{shown}"


def train_tfidf_linear(
    examples: Sequence[Example], categories: Sequence[Category], words: str
) -> Classifier:
    # Each category's name and keywords are examples too: a category with few or
    # no labelled requests is still known by its own words.
    seeded = list(examples) + [
        Example(text, category.id, 1.0)
        for category in categories
        for text in (category.name, *(category.keywords or []))
        if text
    ]
    if len({e.category for e in seeded}) < 2:
        raise ValueError("a classifier needs examples of at least two categories")
    return TfidfLinear(words).fit(seeded)


class KeywordClassifier:
    """Counts each category's keywords in the text; more hits, more confidence."""

    name = "keywords"

    def __init__(self, categories: Sequence[Category]) -> None:
        self.keywords = {c.id: [k.lower() for k in c.keywords if k] for c in categories}

    def predict(self, text: str) -> Prediction:
        lowered = text.lower()
        hits = {cid: [k for k in words if k in lowered] for cid, words in self.keywords.items()}
        scored = sorted(
            ((cid, len(found)) for cid, found in hits.items() if found), key=lambda p: -p[1]
        )
        if not scored:
            return Prediction([], [])
        total = sum(count for _, count in scored)
        ranked = [(cid, count / total) for cid, count in scored]
        return Prediction(ranked, [f"keyword:{k}" for k in hits[ranked[0][0]][:TOP_FEATURES]])


def train_keywords(
    _examples: Sequence[Example], categories: Sequence[Category], _words: str
) -> Classifier:
    return KeywordClassifier(categories)


MODELS: dict[str, Trainer] = {"tfidf-linear": train_tfidf_linear, "keywords": train_keywords}

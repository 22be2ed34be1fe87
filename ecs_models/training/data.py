"""Classifier datasets: synthetic ultrasound from the generator, concatenation, labels, loaders and
the train/eval transforms (the paper's RandomResizedCrop, vertical flip and mild intensity
jitter). Used alike by centralized runs and federated clients; a site's real ultrasound comes
from :mod:`client.data.site_datasets`.

Image convention: the data layer gives float32 [1, S, S] in [0, 1]; models see [-1, 1]. Evaluation
inputs come from :func:`ecs_models.inputs.model_input`, the numpy code the exported bundle and the
clinic tools use, so a screened image gets exactly what validation and test images got.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset, TensorDataset

from ecs_models.inputs import model_input

__all__ = ["TransformedImages", "make_loader", "synthetic_dataset", "cap_synthetic", "combine", "dataset_labels"]


class TransformedImages(Dataset[tuple[torch.Tensor, int]]):
    """Wraps a dataset of ``([1, S, S] in [0, 1], label)`` and returns ``([1, R, R] in [-1, 1], label)``.

    ``train=True`` applies RandomResizedCrop(R, scale 0.7-1), vertical flip (p = 0.5) and
    brightness/contrast jitter of +-10 %; otherwise :func:`ecs_models.inputs.model_input` (the
    antialiased bilinear resize to R, as torchvision's, in numpy).
    """

    def __init__(self, base: Dataset, size: int, *, train: bool) -> None:
        self.base = base
        self.size = size
        if train:  # torchvision (~15 % of a site app's import time) only where images are augmented
            from torchvision.transforms import v2
        self.transform = v2.Compose([
            v2.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(0.85, 1.15), antialias=True),
            v2.RandomVerticalFlip(0.5),
            v2.ColorJitter(brightness=0.1, contrast=0.1),
        ]) if train else None

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[index]
        if self.transform is None:  # evaluation: the bundle's and the clinic's input code
            return torch.from_numpy(model_input(image.numpy(), self.size)), int(label)
        image = self.transform(image.clamp(0, 1))
        return image * 2.0 - 1.0, int(label)


def synthetic_dataset(images: torch.Tensor, labels: Sequence[int]) -> TensorDataset:
    """Synthetic ultrasound from the generator (float [N, 1, S, S] in [-1, 1]) as ``([0, 1], label)`` items."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} synthetic images but {len(labels)} labels")
    return TensorDataset(((images.float() + 1.0) / 2.0).clamp(0, 1), torch.as_tensor(list(labels), dtype=torch.int64))


def cap_synthetic(synthetic: Dataset | None, n_real: int, ratio: float, generator: torch.Generator) -> Dataset | None:
    """At most ``ratio`` synthetic images per real one (a random subset drawn with ``generator``)."""
    limit = int(round(ratio * n_real))
    if synthetic is None or len(synthetic) <= limit:  # type: ignore[arg-type]
        return synthetic
    keep = torch.randperm(len(synthetic), generator=generator)[:limit]  # type: ignore[arg-type]
    return Subset(synthetic, keep.tolist())


def combine(datasets: Sequence[Dataset]) -> Dataset:
    """Concatenate non-empty datasets (an empty list gives an empty dataset)."""
    non_empty = [d for d in datasets if len(d) > 0]  # type: ignore[arg-type]
    return ConcatDataset(non_empty) if non_empty else TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.int64))


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """Labels of every item, without loading images where the dataset knows them."""
    if isinstance(dataset, ConcatDataset):
        return np.concatenate([dataset_labels(d) for d in dataset.datasets]) if dataset.datasets else np.zeros(0, np.int64)
    if isinstance(getattr(dataset, "labels", None), list):  # a site's dataset knows its labels without reading images
        return np.asarray(dataset.labels, dtype=np.int64)
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1].numpy().astype(np.int64)
    if isinstance(dataset, TransformedImages):
        return dataset_labels(dataset.base)
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)  # type: ignore[arg-type]


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None,
                workers: int = 0) -> DataLoader:
    """Training (``shuffle=True``: last incomplete batch dropped) or evaluation loader."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=workers,
                      persistent_workers=workers > 0, drop_last=shuffle and len(dataset) > batch_size)  # type: ignore[arg-type]

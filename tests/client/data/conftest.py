"""Fixtures for the DICOM data-layer tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import build_dataset, save, synthetic_fan


@pytest.fixture
def write_dicom(tmp_path: Path) -> Callable[..., Path]:
    """``write_dicom(name, pixels, **build_dataset_kwargs) -> path`` under tmp_path."""

    def _write(name: str, pixels: np.ndarray, **kwargs: object) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return save(build_dataset(pixels, **kwargs), path)  # type: ignore[arg-type]

    return _write


@pytest.fixture
def fan_scene() -> dict[str, np.ndarray]:
    """See :func:`dicom_factory.synthetic_fan`."""
    return synthetic_fan()

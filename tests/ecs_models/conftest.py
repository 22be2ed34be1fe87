"""Model tests run single-threaded: tiny tensors gain nothing from threads, and on a shared
2-core machine thread contention made a 64x64 forward take seconds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""Supernets whose sub-networks are sliced out of one module's shared weights.

The built-in Fashion-MNIST CNN and the Once-for-All supernets both hold an elastic module
with ``extract(arch)`` (the active weights as a standalone module). What they share lives
here: ``extract`` through a small LRU cache per encoding, with a hook to make the slice's
BatchNorm statistics its own (``recalibrate``), and ``timing_module``, the slice without
that hook, for latency measurement. One lock per supernet: the API and job threads share
an instance.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from .base import Arch, Supernet


class SlicedSupernet(Supernet):
    """``extract`` and ``timing_module`` for a supernet whose ``module`` slices sub-networks.

    A subclass calls ``_init_slices`` in its constructor and may override ``recalibrate``.
    """

    module: Any  # an nn.Module with ``extract(arch) -> nn.Module``

    def _init_slices(self, cache_size: int) -> None:
        self._cache: OrderedDict[str, nn.Module] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def recalibrate(self, subnet: nn.Module, arch: Arch) -> None:
        """Give a fresh slice BatchNorm statistics of its own; by default it keeps the
        shared ones (they belong to no single sub-network, but are all there is)."""

    def extract(self, arch: Arch) -> nn.Module:
        """The active weights as a standalone module in eval mode, ``recalibrate``d;
        deterministic, so the module measured is the module exported. Cached per encoding
        (the evaluation and a later export ask for the same one)."""
        key = self.encode(arch)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            arch = self.decode(key)
            with torch.no_grad():
                subnet: nn.Module = self.module.extract(arch).eval()
            self.recalibrate(subnet, arch)
            self._cache[key] = subnet
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return subnet

    def timing_module(self, arch: Arch) -> nn.Module:
        """``extract`` without ``recalibrate`` (new statistics in the same kernels): for
        latency measurement only; not cached."""
        arch = self.decode(self.encode(arch))
        with self._lock, torch.no_grad():
            module: nn.Module = self.module.extract(arch).eval()
            return module

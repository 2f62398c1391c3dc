"""Smoothing methods: each one file that reads like its paper's algorithm box, each implementing
the abstract :class:`SmoothedClassifier` contract (:mod:`.base`)."""
from .base import SmoothedClassifier
from .cohen import Smooth

__all__ = ["SmoothedClassifier", "Smooth"]

"""Geometry backends behind one protocol (DESIGN §4), built by name.

Registered here: ``perturbed`` and ``perturbed_metric`` (test instruments that
derive predictions from ground truth, :mod:`.perturbed`) and ``colmap``
(pycolmap SfM on keyframes, :mod:`.colmap`). Network backends (Pi3X, MoGe-2)
register themselves the same way with :func:`register_backend`.
"""

from wmkit.annotate.backends.registry import BACKENDS, make_backend, register_backend
from wmkit.annotate.backends import colmap, perturbed  # noqa: F401  (import registers the backends)

__all__ = ["BACKENDS", "register_backend", "make_backend"]

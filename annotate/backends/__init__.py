"""Geometry backends behind one protocol (DESIGN §4), built by name.

Registered here: ``perturbed`` and ``perturbed_metric`` (test instruments that
derive predictions from ground truth, :mod:`.perturbed`) and ``colmap``
(pycolmap SfM on keyframes, :mod:`.colmap`), and the networks ``pi3x``
(:mod:`.pi3x`) and ``moge2`` (:mod:`.moge2`), which load local checkpoints in
``setup()``. Out-of-tree backends register themselves the same way with
:func:`register_backend`.
"""

from wmkit.annotate.backends.registry import BACKENDS, make_backend, register_backend
from wmkit.annotate.backends import colmap, moge2, perturbed, pi3x  # noqa: F401  (import registers the backends)

__all__ = ["BACKENDS", "register_backend", "make_backend"]

"""wmkit: camera-controlled world-model data and training.

The repository root is this package; each top-level folder is a subpackage
(``manifests/`` is ``wmkit.manifests``). See README.md for the map.
"""

__version__ = "0.1.0"

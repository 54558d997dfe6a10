"""Backend registry: backends register a class under a name; the pipeline builds them by name.

A backend class is constructed with keyword options only (``make_backend(name,
**options)``), so a config can name a backend and its options as plain data and
each Ray actor builds its own instance, then calls ``setup()`` once.
"""

from __future__ import annotations

from typing import Callable

from wmkit.annotate.types import AnnotateError, Backend

__all__ = ["BACKENDS", "register_backend", "make_backend"]

BACKENDS: dict[str, type] = {}


def register_backend(name: str) -> Callable[[type], type]:
    """Class decorator that registers a backend class under ``name`` (names are unique)."""

    def register(cls: type) -> type:
        if name in BACKENDS and BACKENDS[name] is not cls:
            raise ValueError(f"backend {name!r} is already registered by {BACKENDS[name].__qualname__}")
        if getattr(cls, "name", None) != name:
            raise ValueError(f"backend class {cls.__qualname__} must have name = {name!r}")
        BACKENDS[name] = cls
        return cls

    return register


def make_backend(name: str, **options) -> Backend:
    """A new backend instance of the registered class ``name`` built with ``options``.

    Raises AnnotateError for an unknown name or options the backend does not
    take (the message lists what is known). ``setup()`` is left to the caller,
    which runs it once per worker.
    """
    if name not in BACKENDS:
        raise AnnotateError(f"unknown backend {name!r}; registered: {sorted(BACKENDS)}")
    try:
        return BACKENDS[name](**options)
    except TypeError as err:
        raise AnnotateError(f"backend {name!r}: bad options {sorted(options)} ({err})") from err

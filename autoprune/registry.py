"""A name -> object registry: the one mechanism behind pruning methods, search backends and latency runtimes.

Each registry holds objects of given kinds under their ``name`` class attribute; a name used in a
policy, a search space, ``search(backend=...)`` or a hardware profile is looked up here, so code
dispatches on the object, never on its name.

Example:
    >>> from autoprune.errors import AutopruneInputError
    >>> class Greeter:
    ...     name = "hello"
    >>> greeters = Registry("greeter", (Greeter,), error=AutopruneInputError,
    ...                     unknown="unknown greeter {name!r}; known: {known}")
    >>> greeters.register(Greeter()).name, greeters.names()
    ('hello', ['hello'])
    >>> greeters.get("bye")
    Traceback (most recent call last):
    ...
    autoprune.errors.AutopruneInputError: unknown greeter 'bye'; known: ['hello']
"""

from __future__ import annotations

from typing import Generic, TypeVar

from autoprune.errors import AutopruneInputError

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects of ``kinds`` by name. ``error`` is raised for a bad registration, ``unknown_error`` (default
    ``error``) with the ``unknown`` message (``{name}``, ``{known}``) for a name that is not registered."""

    def __init__(self, what: str, kinds: tuple[type, ...], *, error: type[AutopruneInputError], unknown: str,
                 unknown_error: type[AutopruneInputError] | None = None) -> None:
        self.what, self.kinds, self.error, self.unknown = what, kinds, error, unknown
        self.unknown_error = unknown_error or error
        #: name -> object (tests replace entries with ``monkeypatch.setitem``)
        self.entries: dict[str, T] = {}

    def register(self, obj: T, *, overwrite: bool = False) -> T:
        """Add ``obj`` under ``obj.name`` and return it; a name taken already needs ``overwrite=True``."""
        if not isinstance(obj, self.kinds):
            kinds = " or ".join(k.__name__ for k in self.kinds)
            raise self.error(f"a {self.what} must be an instance of {kinds}, got {type(obj).__name__}")
        name = getattr(obj, "name", None)
        if not isinstance(name, str) or not name:
            raise self.error(f"{type(obj).__name__} must set a non-empty class attribute `name`")
        if name in self.entries and not overwrite:
            raise self.error(f"a {self.what} named {name!r} is already registered; pass overwrite=True")
        self.entries[name] = obj
        return obj

    def get(self, name: str) -> T:
        """The object registered as ``name``; the ``unknown_error`` listing the known names otherwise."""
        try:
            return self.entries[name]
        except (KeyError, TypeError):
            raise self.unknown_error(self.unknown.format(name=name, known=self.names())) from None

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self.entries)

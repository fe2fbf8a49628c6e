"""Options several commands share, declared once as a group: a command names one parameter for the group and
receives the group's values as one typed object.

typer reads a command's options from its signature and has no option groups; :class:`OptionGroup` writes the
group's options into the decorated command's signature (so ``--help`` lists them in its place) and gathers
their values into ``build(**values)`` before the command runs. Nothing here imports torch.

Example:
    >>> import typer
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Size:
    ...     width: int
    ...     height: int
    >>> size = OptionGroup("size", Size, (("width", int, typer.Option(2)), ("height", int, typer.Option(3))))
    >>> @size
    ... def area(size: Size = None, debug: bool = False) -> int:
    ...     return size.width * size.height
    >>> list(inspect.signature(area).parameters), area(width=4, height=5, debug=False)
    (['width', 'height', 'debug'], 20)
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable

#: a group's option: its parameter name, annotation (a type, not a string) and ``typer.Option``
GroupOption = tuple[str, Any, Any]


@dataclass(frozen=True)
class OptionGroup:
    """``name``: the command's parameter that receives ``build(**values)``; ``options``: the group's options."""

    name: str
    build: Callable[..., Any]
    options: tuple[GroupOption, ...]

    def __call__(self, command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command)
        params = list(signature.parameters.values())
        at = next((i for i, p in enumerate(params) if p.name == self.name), None)
        if at is None:
            raise TypeError(f"{command.__name__} has no parameter {self.name!r} for its option group")
        added = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=option, annotation=kind)
                 for name, kind, option in self.options]
        params[at:at + 1] = added
        names = [name for name, _, _ in self.options]

        @functools.wraps(command)
        def grouped(**kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            return command(**kwargs, **{self.name: self.build(**values)})

        hints = inspect.get_annotations(command, eval_str=True)
        hints.pop(self.name, None)
        grouped.__annotations__ = {**hints, **{name: kind for name, kind, _ in self.options}}
        grouped.__signature__ = signature.replace(parameters=[
            p.replace(annotation=grouped.__annotations__.get(p.name, p.annotation)) for p in params])
        del grouped.__wrapped__  # typer reads the signature above, not the command's own
        return grouped

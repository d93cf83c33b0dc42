"""One small generic registry: name -> entry with a function, a paper link and the
hyperparameters that build the UI's sliders.

Example:
    >>> METHODS = Registry("merge method")
    >>> @METHODS.register("average", paper="https://arxiv.org/abs/2203.05482",
    ...                   params=[Hyper("weights", "floats", default=None)])
    ... def average(models, *, weights=None): ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Generic, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Hyper:
    """One hyperparameter of a registered function.

    Attributes:
        name: keyword argument name.
        kind: "float", "int", "bool", "choice", "floats" (one per model) or "str".
        default: default value.
        low, high: slider range for numbers.
        step: slider step for numbers.
        choices: allowed values for kind "choice".
        help: one line shown next to the widget.
        sum_limit: ``(other, total)``: this value plus the value of hyperparameter ``other``
            may not exceed ``total`` (e.g. Breadcrumbs' density + γ ≤ 1); forms narrow this
            slider's range once ``other`` is set, so no pair of slider values is invalid.
    """

    name: str
    kind: str
    default: Any = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] = ()
    help: str = ""
    sum_limit: tuple[str, float] | None = None


@dataclass(frozen=True)
class Entry(Generic[F]):
    """A registered function with its metadata."""

    name: str
    fn: F
    title: str
    paper: str
    params: tuple[Hyper, ...]
    tags: frozenset[str] = field(default_factory=frozenset)
    doc: str = ""

    def defaults(self) -> dict[str, Any]:
        """Default value of every hyperparameter."""
        return {p.name: p.default for p in self.params}


class Registry(Generic[F]):
    """Name -> Entry mapping with a decorator to register functions.

    ``entry`` is the entry class: a subclass of :class:`Entry` may add fields (a merge method's
    tensor kernel, its data hook), set by keyword at :meth:`register` or later with
    :meth:`attach` (for functions defined below the registered one in the same file).
    """

    def __init__(self, what: str, entry: type[Entry[Any]] = Entry):
        self.what = what
        self._entry_type = entry
        self._entries: dict[str, Entry[F]] = {}

    def register(
        self,
        name: str,
        *,
        title: str | None = None,
        paper: str = "",
        params: Sequence[Hyper] = (),
        tags: Sequence[str] = (),
        **extra: Any,
    ) -> Callable[[F], F]:
        """Decorator that registers ``fn`` under ``name``; ``extra`` fills the entry class's
        own fields."""
        self._check_fields(name, extra)

        def deco(fn: F) -> F:
            if name in self._entries:
                raise ValueError(f"{self.what} {name!r} is already registered")
            names = [p.name for p in params]
            for p in params:
                if p.sum_limit is None:
                    continue
                other = p.sum_limit[0] if isinstance(p.sum_limit, tuple) else None
                if len(p.sum_limit) != 2 or other not in names or other == p.name:
                    raise ValueError(
                        f"{self.what} {name!r}: sum_limit of {p.name!r} must be (other "
                        f"hyperparameter, total) naming one of {names}, got {p.sum_limit!r}"
                    )
            doc = (fn.__doc__ or "").strip().splitlines()
            self._entries[name] = self._entry_type(
                name=name,
                fn=fn,
                title=title or name.replace("_", " "),
                paper=paper,
                params=tuple(params),
                tags=frozenset(tags),
                doc=doc[0] if doc else "",
                **extra,
            )
            return fn

        return deco

    def attach(self, name: str, **extra: Any) -> None:
        """Set fields of the entry class on the registered entry ``name`` (e.g. its tensor
        kernel, defined below the registered function)."""
        entry = self[name]
        self._check_fields(name, extra)
        self._entries[name] = replace(entry, **extra)

    def _check_fields(self, name: str, extra: Mapping[str, Any]) -> None:
        own = {f.name for f in fields(self._entry_type)} - {f.name for f in fields(Entry)}
        unknown = sorted(set(extra) - own)
        if unknown:
            raise TypeError(
                f"{self.what} {name!r}: unknown entry field(s) {unknown}; expected some of "
                f"{sorted(own)}"
            )

    def __getitem__(self, name: str) -> Entry[F]:
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.what} {name!r}; expected one of {sorted(self._entries)}"
            ) from None

    def get(self, name: str) -> Entry[F]:
        return self[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[Entry[F]]:
        return list(self._entries.values())

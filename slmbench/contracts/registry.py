"""One registry shape for every plugin kind (backends, adapters, scenarios, model sources), as lm-eval does for
its models: a name maps to a subclass of the kind's base class; a second class under a taken name, or a class that
is not a subclass, is refused when it registers; an unknown name is one line that lists the known ones.

Built-ins are the modules of one package (slmbench/backends/, ...): a new file there with a registered class is
found on the first lookup of a name not yet known, so adding a built-in is one file. Such modules import heavy
libraries inside functions, not at the top. Third-party plugins register through package entry points, group
`slmbench.<kind>s`, with no change to slmbench:

    [project.entry-points."slmbench.backends"]
    mybackend = "my_pkg.my_backend:MyEngine"
"""
from __future__ import annotations

import importlib
import pkgutil
from importlib import metadata
from typing import Generic, TypeVar

from ..errors import UserError

T = TypeVar("T")


class RegistryError(TypeError):
    """A plugin that breaks the registry's rules: a programming error, raised where the plugin registers."""


class Registry(Generic[T]):
    def __init__(self, kind: str, base: type, *packages: str, label: str | None = None):
        self.kind, self.base, self.label = kind, base, label or kind
        self.group = f"slmbench.{kind}s"
        self.packages = packages  # the built-ins: every module of these packages (or these modules)
        self._scanned = False
        self._items: dict[str, type] = {}
        self._entry_points: dict[str, metadata.EntryPoint] | None = None

    # --- registering --------------------------------------------------------------------------------------------
    def register(self, cls: type) -> type:
        """Class decorator: the class's `name` attribute is its registry key."""
        name = getattr(cls, "name", None)
        if not isinstance(cls, type) or not issubclass(cls, self.base):
            raise RegistryError(f"{self.kind} {name or cls!r}: {cls!r} is not a subclass of {self.base.__name__}")
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{self.kind} {cls.__qualname__}: set a class attribute `name`")
        have = self._items.get(name)
        if have is not None and have is not cls and _qualname(have) != _qualname(cls):
            raise RegistryError(f"duplicate {self.kind} {name!r}: {_qualname(have)} and {_qualname(cls)}")
        check = getattr(cls, "check_plugin", None)
        if check:
            check()
        self._items[name] = cls
        return cls

    # --- looking up -------------------------------------------------------------------------------------------
    def get(self, name: str, file: str | None = None, field: str | None = None) -> type:
        if name not in self._items:
            self._load(name)
        if name not in self._items:
            raise UserError(f"unknown {self.label} {name!r} (known: {', '.join(self.names())})", file=file,
                            field=field)
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
            return True
        except UserError:
            return False

    def names(self) -> list[str]:
        self._scan()
        return sorted(set(self._items) | set(self._eps()))

    def all(self) -> dict[str, type]:
        for n in self.names():
            self.get(n)
        return dict(self._items)

    def _scan(self) -> None:
        if self._scanned:
            return
        self._scanned = True
        for name in self.packages:
            pkg = importlib.import_module(name)
            for m in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
                importlib.import_module(f"{name}.{m.name}")

    def _load(self, name: str) -> None:
        self._scan()
        if name in self._items:
            return
        ep = self._eps().get(name)
        if ep is not None:
            obj = ep.load()
            if obj is not self._items.get(name):
                self.register(obj)
            if self._items.get(name) is not obj:
                raise RegistryError(f"entry point {ep.value!r} ({self.group}) names {self.kind} {name!r}, but the "
                                    f"class says name = {getattr(obj, 'name', None)!r}")

    def _eps(self) -> dict[str, metadata.EntryPoint]:
        if self._entry_points is None:
            self._entry_points = {ep.name: ep for ep in metadata.entry_points(group=self.group)}
        return self._entry_points

    def refresh(self) -> None:
        """Forget the entry-point list (a package installed since the first lookup)."""
        self._entry_points = None


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"

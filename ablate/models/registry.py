"""The component registry: one name -> class table per slot.

Follows fvcore's ``Registry`` (a dict, ``register()`` usable as a decorator or a call) with two
changes: a duplicate name raises instead of asserting, and an unknown name is a
:class:`~ablate.errors.ConfigError` that suggests the closest name and lists the known ones.

A slot is a place in the model (``embed``, ``clav``, ``como``, ``head``) or the objective (``mil``,
``magnitude``) that holds exactly one component; :mod:`ablate.models.slots` declares them. A
component is built from a resolved spec ``{"type": name, **options}`` by :meth:`Registry.build`
(mmengine's ``build_from_cfg`` convention); its options are the keyword parameters of its
constructor, which is why the registry reads constructor signatures and docstrings instead of
keeping a second, hand-written description that could drift. ``{"type": "none"}`` switches an
optional slot off.

Model components take the input width as their first constructor argument ``in_dim`` (given by the
model, not an option) and expose their output width as ``out_dim``.

Third-party components (plugins). A study spec can only name registered components; other
packages add theirs through the ``ablate.components`` entry-point group. Each entry point names a
callable that receives the registry and registers into it::

    # pyproject.toml of the plugin package
    [project.entry-points."ablate.components"]
    my_heads = "my_package.ablate_plugin:register"

    # my_package/ablate_plugin.py
    def register(registry):
        registry.register("head", "my_head", MyHead)

The entry points are loaded once, lazily, when the registry is first queried (nothing is imported
at ``import ablate``), in name order. A plugin that fails to load or to register is a
:class:`~ablate.errors.ConfigError` naming it, raised on every query until it is fixed or
uninstalled, so a spec never silently loses a component. On a cluster the plugin must be
installed on every node, like ``ablate`` itself: trial workers resolve specs too.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ablate.errors import ConfigError, closest, unknown_message
from ablate.models.docs import docstring_args, summary
from ablate.models.listing import Option, type_name
from ablate.models.slots import SLOTS, Slot

NONE = "none"
"""The reserved component name that switches an optional slot off."""

PLUGIN_GROUP = "ablate.components"
"""The entry-point group through which installed packages register components."""

# Constructor parameters that are not user options: the model passes them.
_BUILD_ARGS = ("self", "in_dim", "feature_dim")

T = TypeVar("T")


@dataclass(frozen=True)
class Constraint:
    """A check on an option's value beyond its type, e.g. a width must be positive.

    Attributes:
        check: Returns True when the (type-checked) value is acceptable.
        requirement: What the value must be, phrased to follow "must be", e.g. "> 0".
    """

    check: Callable[[Any], bool]
    requirement: str


POSITIVE = Constraint(lambda v: v > 0, "> 0")
NON_NEGATIVE = Constraint(lambda v: v >= 0, ">= 0")
PROBABILITY = Constraint(lambda v: 0 <= v < 1, "in [0, 1)")
ODD_POSITIVE = Constraint(lambda v: v > 0 and v % 2 == 1, "an odd number >= 1")


class Registry:
    """Slots, each a name -> component class table.

    Args:
        plugin_group: Entry-point group whose plugins are loaded on the first query (see the
            module docstring); None for a registry without plugins.
        slots: Slots to declare at once, in order.

    Example:
        >>> registry = Registry()
        >>> registry.add_slot("embed", group="model", default="mlp", description="...")
        >>> @registry.register("embed", "mlp")
        ... class MLPEmbed(torch.nn.Module): ...
    """

    def __init__(self, plugin_group: str | None = None, slots: Iterable[Slot] = ()) -> None:
        self._slots: dict[str, Slot] = {}
        self._components: dict[str, dict[str, type]] = {}
        self._plugin_group = plugin_group
        self._plugins_loaded = plugin_group is None
        self._plugin_error: ConfigError | None = None
        for slot in slots:
            self.add_slot(slot.name, group=slot.group, default=slot.default,
                          description=slot.description, optional=slot.optional)

    # -- declaration -------------------------------------------------------------------------

    def add_slot(
        self, name: str, *, group: str, default: str, description: str, optional: bool = False
    ) -> None:
        """Declare a slot.

        Args:
            name: Slot name.
            group: ``"model"`` or ``"loss"``.
            default: Component used when a spec leaves the slot out.
            description: One line for ``ablate list``.
            optional: Whether ``{"type": "none"}`` switches the slot off.

        Raises:
            ValueError: The slot already exists.
        """
        if name in self._slots:
            raise ValueError(f"slot '{name}' is already declared")
        self._slots[name] = Slot(name, group, default, optional, description)
        self._components[name] = {}

    def register(self, slot: str, name: str | None = None, obj: type | None = None) -> Any:
        """Register ``obj`` under ``name`` in ``slot``; without ``obj``, return a decorator.

        Args:
            slot: A declared slot.
            name: Component name used in specs; defaults to ``obj.__name__``.
            obj: The component class.

        Raises:
            ValueError: Unknown slot, reserved name ``none``, or a name already taken in the slot.
        """
        if slot not in self._slots:
            raise ValueError(f"unknown slot '{slot}'; declared: {', '.join(self._slots)}")

        def add(cls: T) -> T:
            key = name or cls.__name__  # type: ignore[attr-defined]
            if key == NONE:
                raise ValueError(f"'{NONE}' is reserved for switching a slot off")
            if key in self._components[slot]:
                taken = self._components[slot][key]
                raise ValueError(
                    f"component '{key}' is already registered in slot '{slot}' "
                    f"(by {taken.__module__}.{taken.__qualname__})"
                )
            self._components[slot][key] = cls  # type: ignore[assignment]
            return cls

        if obj is None:
            return add
        return add(obj)

    # -- plugins -----------------------------------------------------------------------------

    def _load_plugins(self) -> None:
        """Calls every entry point of the plugin group with this registry, once.

        Raises:
            ConfigError: A plugin failed to load or to register (raised on every query).
        """
        if self._plugin_error is not None:
            raise self._plugin_error
        if self._plugins_loaded:
            return
        self._plugins_loaded = True  # first: a plugin may query the registry while registering
        from importlib.metadata import entry_points

        for entry in sorted(entry_points(group=self._plugin_group), key=lambda e: e.name):
            try:
                entry.load()(self)
            except Exception as exc:  # any failure of third-party code: name the plugin
                self._plugin_error = ConfigError(
                    f"plugin '{entry.name}' ({entry.value}) of entry-point group "
                    f"'{self._plugin_group}' failed: {exc.__class__.__name__}: {exc}; fix or "
                    f"uninstall the package that provides it")
                raise self._plugin_error from exc

    # -- lookup ------------------------------------------------------------------------------

    def slots(self, group: str | None = None) -> list[str]:
        """Slot names in declaration order, optionally only those of ``group``."""
        self._load_plugins()
        return [s.name for s in self._slots.values() if group is None or s.group == group]

    def slot(self, name: str) -> Slot:
        """The declaration of slot ``name``."""
        self._check_slot(name)
        return self._slots[name]

    def components(self, slot: str) -> list[str]:
        """Component names of ``slot``, sorted, with ``none`` last for optional slots."""
        self._check_slot(slot)
        names = sorted(self._components[slot])
        return names + [NONE] if self._slots[slot].optional else names

    def get(self, slot: str, name: str, path: str | None = None) -> type | None:
        """The class registered as ``name`` in ``slot``; None for ``none`` in an optional slot.

        Args:
            slot: Slot name.
            name: Component name.
            path: Key path used in the error message; defaults to ``<group>.<slot>.type``.

        Raises:
            ConfigError: Unknown component, naming the closest one and the allowed ones.
        """
        self._check_slot(slot)
        if name == NONE and self._slots[slot].optional:
            return None
        if name not in self._components[slot]:
            allowed = self.components(slot)
            where = path or f"{self._slots[slot].group}.{slot}.type"
            tail = unknown_message(f"unknown component '{name}'", allowed, closest(name, allowed))
            raise ConfigError(f"{where}: {tail}")
        return self._components[slot][name]

    def build(self, slot: str, spec: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        """Build the component a resolved spec names; None when it switches the slot off.

        Args:
            slot: Slot name.
            spec: A resolved component spec ``{"type": name, **options}``.
            *args: Leading constructor arguments the caller supplies (a model component's
                ``in_dim``).
            **kwargs: Further constructor arguments the caller supplies (``feature_dim``).

        Returns:
            ``cls(*args, **kwargs, **options)``, or None for ``{"type": "none"}``.

        Raises:
            ConfigError: Unknown component.
        """
        cls = self.get(slot, spec["type"])
        if cls is None:
            return None
        options = {k: v for k, v in spec.items() if k != "type"}
        return cls(*args, **kwargs, **options)

    def parameters(self, slot: str, name: str) -> dict[str, tuple[Any, Any]]:
        """Options of a component: name -> (evaluated type annotation, default), in order."""
        cls = self.get(slot, name)
        if cls is None:
            return {}
        init = cls.__init__  # type: ignore[misc]
        hints = typing.get_type_hints(init)
        params: dict[str, tuple[Any, Any]] = {}
        for param in inspect.signature(init).parameters.values():
            if param.name in _BUILD_ARGS:
                continue
            if param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                raise TypeError(f"{cls.__qualname__}: options must be explicit, not *args/**kwargs")
            if param.default is param.empty:
                raise TypeError(f"{cls.__qualname__}: option '{param.name}' needs a default")
            params[param.name] = (hints.get(param.name, Any), param.default)
        return params

    def options(self, slot: str, name: str) -> list[Option]:
        """Options of a component with type, default and the description from its docstring."""
        cls = self.get(slot, name)
        if cls is None:
            return []
        docs = docstring_args(cls)
        return [
            Option(option, type_name(annotation), default, docs.get(option, ""))
            for option, (annotation, default) in self.parameters(slot, name).items()
        ]

    def constraints(self, slot: str, name: str) -> dict[str, Constraint]:
        """Value checks a component declares in its ``constraints`` class attribute."""
        cls = self.get(slot, name)
        return dict(getattr(cls, "constraints", {})) if cls is not None else {}

    def describe(self, slot: str, name: str) -> str:
        """One-line description of a component (first docstring line)."""
        cls = self.get(slot, name)
        return "switches the slot off" if cls is None else summary(cls)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """Every (slot, component) pair, ``none`` included."""
        for slot in self._slots:
            for name in self.components(slot):
                yield slot, name

    def _check_slot(self, slot: str) -> None:
        self._load_plugins()  # every lookup but slots() passes here
        if slot not in self._slots:
            allowed = sorted(self._slots)
            raise ConfigError(
                unknown_message(f"unknown slot '{slot}'", allowed, closest(slot, allowed))
            )


REGISTRY = Registry(plugin_group=PLUGIN_GROUP, slots=SLOTS)
"""The registry every spec is resolved against; component modules register into it on import,
plugins (see the module docstring) on its first query."""

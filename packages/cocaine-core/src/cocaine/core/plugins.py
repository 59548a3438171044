"""Finding plugins through entry points and looking components up by the names manifests use."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import pluggy

from cocaine.core import hookspecs
from cocaine.core.errors import PluginError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "cocaine.plugins"
#: Set to a non-empty value to load no entry points (tests and embedding register plugins by hand).
DISABLE_AUTOLOAD_ENV = "COCAINE_DISABLE_PLUGIN_AUTOLOAD"

KINDS = {
    "driver": "cocaine_register_drivers",
    "language": "cocaine_register_languages",
    "backend": "cocaine_register_backends",
    "storage": "cocaine_register_storages",
}


def make_plugin_manager(*, autoload: bool | None = None, plugins: tuple = ()) -> pluggy.PluginManager:
    """Build a plugin manager holding the hook specs and every installed plugin.

    Unlike ``load_setuptools_entrypoints``, a plugin that fails to import does not hide the others:
    the error names the distribution and entry point at fault.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if autoload is None:
        autoload = not os.environ.get(DISABLE_AUTOLOAD_ENV)
    if autoload:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as e:  # noqa: BLE001 - any import failure is reported the same way
                dist = ep.dist.name if ep.dist else "?"
                raise PluginError(
                    f"plugin {ep.name!r} from distribution {dist!r} ({ep.value}) failed to load: {e}"
                ) from e
            pm.register(plugin, name=ep.name)
    for plugin in plugins:
        pm.register(plugin)
    pm.check_pending()
    return pm


@dataclass
class Registry:
    """Components by kind and name, collected once from a plugin manager."""

    components: dict[str, dict[str, type]] = field(default_factory=dict)

    @classmethod
    def from_plugin_manager(cls, pm: pluggy.PluginManager) -> Registry:
        registry = cls({kind: {} for kind in KINDS})
        for kind, hook_name in KINDS.items():
            hook = getattr(pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                for component in impl.function() or ():
                    registry._add(kind, component, impl.plugin_name)
        return registry

    @classmethod
    def load(cls, **kwargs) -> Registry:
        return cls.from_plugin_manager(make_plugin_manager(**kwargs))

    def _add(self, kind: str, component: type, plugin_name: str) -> None:
        name = getattr(component, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin_name!r} registered a {kind} without a name: {component!r}")
        known = self.components[kind]
        if name in known and known[name] is not component:
            raise PluginError(
                f"{kind} {name!r} is registered twice: by {known[name].__module__} and {component.__module__}"
            )
        known[name] = component

    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind])

    def get(self, kind: str, name: str) -> type:
        try:
            return self.components[kind][name]
        except KeyError:
            choices = ", ".join(self.names(kind)) or "none installed"
            raise PluginError(f"unknown {kind} {name!r} (known: {choices})") from None

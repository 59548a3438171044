"""Plugins: built-ins register through the entry-point group like third-party packages do."""

from importlib.metadata import entry_points
from pathlib import Path

import pytest
from pluggy import PluginValidationError

from cocaine.core import hookspecs, plugin_api
from cocaine.core.errors import PluginError
from cocaine.core.plugin_api import Driver, hookimpl
from cocaine.core.plugins import ENTRY_POINT_GROUP, Registry, make_plugin_manager


def test_builtins_come_from_entry_points():
    names = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert names["core"] == "cocaine.core.builtin"
    assert names["drivers"] == "cocaine.drivers.plugin"
    for language in ("python", "cpp", "perl", "js"):
        assert names[language] == f"cocaine.{language}.language"
    registry = Registry.load()
    assert registry.names("driver") == ["cron", "drifting-timer", "filesystem-monitor", "http-server", "manual-scheduler",
                                        "native-server", "raw-socket-server", "recurring-timer", "zeromq-server",
                                        "zeromq-sink", "zeromq-subscriber"]
    assert registry.names("language") == ["cpp", "js", "perl", "python"]
    assert registry.names("backend") == ["process", "thread"]
    assert registry.names("storage") == ["files"]


def test_autoload_can_be_disabled(monkeypatch):
    monkeypatch.setenv("COCAINE_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert Registry.load().names("driver") == []


class Extra(Driver):
    name = "extra"


class Plugin:
    @hookimpl
    def cocaine_register_drivers(self):
        return [Extra]


def test_a_plugin_object_adds_a_driver():
    registry = Registry.load(plugins=(Plugin(),))
    assert registry.get("driver", "extra") is Extra


def test_unknown_names_list_the_known_ones():
    with pytest.raises(PluginError, match=r"unknown driver 'nope' \(known: cron, drifting-timer, .*, zeromq-subscriber\)"):
        Registry.load().get("driver", "nope")


def test_two_plugins_cannot_claim_one_name():
    class Clash(Driver):
        name = "zeromq-server"

    class ClashPlugin:
        @hookimpl
        def cocaine_register_drivers(self):
            return [Clash]

    with pytest.raises(PluginError, match="driver 'zeromq-server' is registered twice"):
        Registry.load(plugins=(ClashPlugin(),))


def test_misspelled_hooks_are_rejected():
    class Typo:
        @hookimpl
        def cocaine_register_driver(self):
            return []

    with pytest.raises(PluginValidationError, match="cocaine_register_driver"):
        make_plugin_manager(plugins=(Typo(),))


DOCS = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


def test_every_hook_is_documented():
    specs = [name for name, value in vars(hookspecs).items()
             if callable(value) and hasattr(value, f"{hookspecs.PROJECT}_spec")]
    assert specs, "no hook specs found: the marker's attribute name changed?"
    text = DOCS.read_text()
    missing = [name for name in specs if f"`{name}()`" not in text]
    assert not missing, f"docs/plugins.md does not describe {missing}"
    assert all(getattr(hookspecs, name).__doc__.strip() for name in specs)


def test_the_plugin_api_exports_what_it_documents():
    text = DOCS.read_text()
    for name in plugin_api.__all__:
        assert hasattr(plugin_api, name), name
        assert f"`{name}`" in text, f"docs/plugins.md does not describe plugin_api.{name}"

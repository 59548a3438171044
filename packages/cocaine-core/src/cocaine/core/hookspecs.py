"""The hook specifications every cocaine plugin implements.

A plugin is a module (or object) listed under the ``cocaine.plugins`` entry-point group whose
functions are decorated with :data:`hookimpl`. Each hook returns a list of component classes; every
class carries the ``name`` that manifests and daemon options use to select it. The built-in drivers,
languages, backends and storages are registered through these hooks exactly like a third-party
package's, so anything the project ships can be replaced or extended from PyPI.

All hooks are called with keyword arguments only, and each plugin may implement any subset.
"""

from __future__ import annotations

import pluggy

PROJECT = "cocaine"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def cocaine_register_drivers() -> list[type]:
    """Return driver classes: event sources that turn outside events into jobs.

    Each class subclasses :class:`cocaine.core.plugin_api.Driver` and sets ``name`` to the value of a
    task's ``type`` key in a manifest (``"zeromq-server"``).

    :returns: a list of driver classes (may be empty).
    """


@hookspec
def cocaine_register_languages() -> list[type]:
    """Return language classes: how to run an app's code in a worker.

    Each class subclasses :class:`cocaine.core.languages.Language` and sets ``name`` to the value of
    a manifest's ``type`` key (``"python"``).

    :returns: a list of language classes (may be empty).
    """


@hookspec
def cocaine_register_backends() -> list[type]:
    """Return worker backend classes: how a worker is started and stopped.

    Each class subclasses :class:`cocaine.core.backends.Backend` and sets ``name`` to the value of a
    manifest's ``engine.backend`` key (``"process"``).

    :returns: a list of backend classes (may be empty).
    """


@hookspec
def cocaine_register_storages() -> list[type]:
    """Return storage classes: where manifests (and other namespaces) are kept.

    Each class subclasses :class:`cocaine.core.storage.Storage` and sets ``name`` to the value of
    the daemon's ``--storage`` option (``"files"``).

    :returns: a list of storage classes (may be empty).
    """

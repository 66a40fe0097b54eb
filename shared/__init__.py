"""Opsdeck shared library: settings, Redis keys and clients, task schemas, auth, logging.

Imports none of ``coordinator``, ``worker`` or ``dashboard``.
"""

__version__ = "0.1.0"

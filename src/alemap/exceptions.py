"""Exceptions raised by alemap.

Every exception subclasses a built-in one, so existing ``except ValueError``
handlers keep working; messages name the file, line or key and the fix.
"""

from __future__ import annotations

__all__ = ["AlemapError", "InputError", "ParameterError", "BackendUnavailableError"]


class AlemapError(Exception):
    """Base class of alemap's own errors."""


class InputError(AlemapError, ValueError):
    """Input data (a foci file, a table, a JSON dataset) is malformed.

    The message names the file and, where there is one, the line.
    """


class ParameterError(AlemapError, ValueError):
    """A parameter has a value outside its allowed range or options."""


class BackendUnavailableError(AlemapError, ImportError):
    """An optional compute backend or extra is not installed or has no device."""

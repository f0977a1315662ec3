"""Errors Shipyard raises on purpose.

ShipyardError
 ├── InputError          bad usage or input: exit 2, one line, nothing written
 │    ├── SourceError    the source file is missing, unreadable or not a model
 │    ├── SpecError      the spec does not validate (names the field)
 │    └── UnknownTarget  a target name that is not in the catalog
 ├── RegistryError       the registry refused or lacks something
 │    ├── NotFound
 │    ├── AlreadyExists  a conditional create lost (If-None-Match)
 │    ├── Conflict       a conditional replace lost (If-Match)
 │    └── IntegrityError stored bytes do not match their digest
 └── ValidationMismatch  an artifact disagrees with its own declared interface
"""

from __future__ import annotations

import re

__all__ = [
    "ANSI_CODES",
    "AlreadyExists",
    "Conflict",
    "InputError",
    "IntegrityError",
    "NotFound",
    "RegistryError",
    "ShipyardError",
    "SourceError",
    "SpecError",
    "UnknownTarget",
    "ValidationMismatch",
    "one_line",
]


# Where in a native library's source an error was raised: `/onnxruntime_src/.../ops.h:563 void
# onnxruntime::BroadcastIterator::Init(ptrdiff_t, ptrdiff_t) `. It says nothing to a user.
_NATIVE_LOCATION = re.compile(r"\S+\.(?:h|hpp|cc|cpp|c):\d+ (?:[\w:<>,*& ]+\([^)]*\) ?)?")


ANSI_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # colours torch.onnx and onnx2tf print into messages


def one_line(message: object, limit: int = 300) -> str:
    """A multi-line message (a converter's, a loader's) as one line of at most `limit` characters,
    without native source locations or terminal colour codes."""
    text = ANSI_CODES.sub("", str(message))
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    text = _NATIVE_LOCATION.sub("", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ShipyardError(Exception):
    """Base of every error Shipyard raises on purpose."""


class InputError(ShipyardError):
    """The user's input is unusable; the CLI exits 2."""


class SourceError(InputError):
    pass


class SpecError(InputError):
    pass


class UnknownTarget(InputError):
    pass


class RegistryError(ShipyardError):
    pass


class NotFound(RegistryError):
    pass


class AlreadyExists(RegistryError):
    pass


class Conflict(RegistryError):
    pass


class IntegrityError(RegistryError):
    pass


class ValidationMismatch(ShipyardError):
    """The artifact's interface (names, dtypes, dims) differs from the source's."""

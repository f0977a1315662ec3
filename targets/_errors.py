"""Turn a converter's exception into the short reason a user needs."""

from __future__ import annotations

import re

from shipyard.errors import ANSI_CODES

__all__ = ["short_error"]

MAX_CHARS = 600
_WARNING = re.compile(r"\bwarn(ing)?\b", re.IGNORECASE)
_NOISE = re.compile(r"^\s*(Traceback|File \"|\^|~|During handling|The above exception|$)")


def short_error(exc: BaseException) -> str:
    """Class name plus the first meaningful lines of the message, capped in length.

    Colour codes go, a line repeated is kept once, and warnings a converter printed into its
    exception (tfjs repeats one per signature) come after the lines that say what failed.
    """
    lines = [ANSI_CODES.sub("", ln).rstrip() for ln in str(exc).splitlines()]
    lines = list(dict.fromkeys(ln for ln in lines if not _NOISE.match(ln)))
    lines = [ln for ln in lines if not _WARNING.search(ln)] + [ln for ln in lines if _WARNING.search(ln)]
    text = " | ".join(lines[:6]) or repr(exc)
    if len(text) > MAX_CHARS:
        text = text[: MAX_CHARS - 3] + "..."
    return f"{type(exc).__name__}: {text}"

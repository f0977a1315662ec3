"""Turn a converter's exception into the short reason a user needs."""

from __future__ import annotations

import re

__all__ = ["short_error"]

MAX_CHARS = 600
_NOISE = re.compile(r"^\s*(Traceback|File \"|\^|~|During handling|The above exception|$)")


def short_error(exc: BaseException) -> str:
    """Class name plus the first meaningful lines of the message, capped in length."""
    lines = [ln.rstrip() for ln in str(exc).splitlines() if not _NOISE.match(ln)]
    text = " | ".join(lines[:6]) or repr(exc)
    if len(text) > MAX_CHARS:
        text = text[: MAX_CHARS - 3] + "..."
    return f"{type(exc).__name__}: {text}"

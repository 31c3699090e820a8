"""Display text: what a hub (or an image, or any file the station reads) says, made safe to show a person.

A hub's serial number, its error texts and an image's header string are data, and data can be hostile: an escape
sequence (ESC, CSI) rewrites the operator's terminal, a carriage return or a bidi override hides what was written,
and `[/]` or `[bold red]` in text handed to rich as markup breaks or forges the live view. `display_text` turns any
value into one line of plain text in which every control character is shown as a visible escape (`\\x1b`, `\\n`,
`\\u202e`); the rich views put it in `Text` objects (`display_cell`), which rich never reads as markup.

JSON output needs none of this: JSON escaping keeps the data exact and harmless.
"""

from __future__ import annotations

import logging
import re

from rich.text import Text

__all__ = ["DisplayTextFormatter", "display_cell", "display_text"]

# C0 controls, DEL and C1 controls; the Unicode line and paragraph separators; the bidi embeddings, overrides and
# isolates, and the zero-width marks that can hide or reorder what a person reads.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def display_text(value: object) -> str:
    """`value` as one line of text with every control character escaped visibly (`\\x1b`); None is ''."""
    if value is None:
        return ""
    return _UNSAFE.sub(_escape, value if isinstance(value, str) else str(value))


def display_cell(value: object, style: str = "") -> Text:
    """`display_text(value)` for a rich table cell: a Text object, so `[/]` in it is shown, never read as markup."""
    return Text(display_text(value), style=style)


class DisplayTextFormatter(logging.Formatter):
    """A log line formatter for people: the message, and each line of a traceback, pass through `display_text`."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return display_text(super().formatMessage(record))

    def formatException(self, ei: logging._SysExcInfoType) -> str:
        return "\n".join(display_text(line) for line in super().formatException(ei).splitlines())

"""Text that came from input, made safe to show.

User ids, reasons, positions and error messages quote input that anyone upstream wrote.
Printed to a terminal, an ESC sequence in it could clear the screen, retitle the window or
forge output; drawn into a page, it could break the markup. `escape_control` spells such
characters out; `json_text` leaves a JSON value the same while keeping them out of the
bytes a terminal reads.
"""

from __future__ import annotations

import json
import re
from typing import Any

# C0 and C1 controls, DEL, line/paragraph separators, and the bidirectional overrides that
# can make text display in another order than it reads ("Trojan Source").
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _spelled(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_control(text: str) -> str:
    """`text` with every control character spelled out as `\\x1b`, `\\u202e`, ... Backslashes
    are left as they are, so ordinary text (Windows paths) reads as typed; `--json` is the
    exact form where it matters."""
    return _CONTROL.sub(_spelled, text)


def json_text(obj: Any) -> str:
    """`obj` as indented JSON. json escapes C0 controls but passes DEL, C1 controls (U+009B
    is CSI to some terminals) and bidi overrides through; they can only occur inside
    strings, where a \\uXXXX escape leaves the JSON value exactly the same."""
    text = json.dumps(obj, ensure_ascii=False, indent=2)
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)

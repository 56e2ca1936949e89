"""The shapes a secret value takes in output lines, so each can be blanked out.

A build secret reaches output as a RUN step prints it: whole, without its trailing newline,
one line at a time when it has several, or base64-encoded (`base64 /run/secrets/x`, which
wraps its output every 76 characters). Output lines lose their control characters before
they are scrubbed (text.printable), so the forms lose them too.
"""

from __future__ import annotations

import base64

from reconciler.decisions.text import printable

# Shorter forms are not scrubbed: blanking every "abc" would blank ordinary words with it.
SHORTEST = 4
# Where `base64` (GNU coreutils and busybox alike) wraps its output by default.
BASE64_WRAP = 76


def forms_of(value: bytes) -> frozenset[str]:
    """Every form of `value` worth scrubbing from an output line, none shorter than SHORTEST."""
    text = value.decode("utf-8", errors="replace")
    forms = {text, text.strip(), *(line.strip() for line in text.splitlines())}
    for raw in {value, value.strip()}:
        encoded = base64.b64encode(raw).decode("ascii")
        forms.add(encoded)
        forms.add(encoded.rstrip("="))
        forms.update(encoded[i : i + BASE64_WRAP] for i in range(0, len(encoded), BASE64_WRAP))
    shown = {printable(form) for form in forms}
    return frozenset(form for form in shown if len(form) >= SHORTEST)

"""What the suite produced, for the suite-wide leak scan (tests/test_zz_leaks.py).

Helpers note every secret value they hand to ``reconcile`` and everything it printed or
sent; the scan then checks that no secret shows up in any of it, nor in any state file or
local database left under the session's temp directory.
"""

from __future__ import annotations

import json
import threading
from urllib.parse import quote, quote_plus

NOT_SECRET = frozenset({
    "PATH", "HOME", "PALETTE_ENDPOINT", "PALETTE_PROJECT_UID", "RECONCILER_CRASH_AT", "RECONCILER_CRASH_LOG",
    "GIT_DIR", "GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT", "GITHUB_EVENT_PATH", "GITHUB_REPOSITORY",
    "RECONCILER_STATE_REMOTE",  # a remote name, printed in the refusal that names the remotes
})

_lock = threading.Lock()
secrets: set[str] = set()
outputs: list[str] = []


def note_env(env: dict[str, str] | None) -> None:
    with _lock:
        for k, v in (env or {}).items():
            if k not in NOT_SECRET and not k.startswith(("GIT_", "GITHUB_", "RUNNER_")) and v and len(v) >= 8:
                secrets.add(v)


def note_secret(value: str) -> None:
    with _lock:
        secrets.add(value)


def note_output(*texts: str) -> None:
    with _lock:
        outputs.extend(t for t in texts if t)


def forms(value: str) -> set[str]:
    """The forms a value can take in a message: raw, JSON-escaped (as Python and as Go write
    it), URL-encoded, in a repr."""
    e = "surrogateescape"  # an environment value of bytes that are not UTF-8 (tests/test_secrets.py)
    go = json.dumps(value)[1:-1].replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    return {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1], go,
            quote(value, safe="", errors=e), quote_plus(value, errors=e), repr(value)[1:-1]}

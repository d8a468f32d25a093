"""Password masking: the one place that turns a URL or a log line into something fit to show.

`redact_url` masks one URL (REDIS_URL in every form DESIGN.md fixes, Sentinel included, and
DATABASE_URL); `redact_text` masks every URL inside free text (a log line, an error message, a
traceback), which the log sink applies to everything it writes. Masking errs towards hiding too
much: a password with unencoded reserved characters is still hidden whole.
"""

from __future__ import annotations

import re

MASK = "***"

# userinfo `user:password@` of a URL inside text; the password runs to the token's LAST "@", so
# an unencoded "@" (or "/") in it is hidden whole.
_TEXT_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/@:]*):[^\s]*@")
# Query parameters that carry a secret: `?password=...` (redis-py, libpq), `sslpassword`, tokens.
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&][^\s&#=]*(?:pass|secret|token)[^\s&#=]*=)[^\s&#]*", re.IGNORECASE
)


def redact_url(url: str) -> str:
    """`url` with the password of its userinfo and of its query replaced by ``***``.

    ``redis://:pw@h:6379/0`` -> ``redis://:***@h:6379/0``;
    ``redis+sentinel://:pw@h1:26379,h2:26379/mymaster/0`` -> ``redis+sentinel://:***@h1:...``;
    ``postgres://user:pw@h/db`` -> ``postgres://user:***@h/db``. A user name alone is kept.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _QUERY_SECRET.sub(rf"\g<key>{MASK}", url)
    rest = _QUERY_SECRET.sub(rf"\g<key>{MASK}", rest)
    userinfo, at, hosts = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return f"{scheme}://{rest}"
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:{MASK}@{hosts}"


def redact_text(text: str) -> str:
    """`text` with the password of every URL in it masked (see `redact_url`)."""
    if "@" not in text and "=" not in text:
        return text  # the common case, and cheap: nothing that could hold a password
    text = _TEXT_USERINFO.sub(rf"\g<head>:{MASK}@", text)
    return _QUERY_SECRET.sub(rf"\g<key>{MASK}", text)

"""What REDIS_URL may say: the plain forms redis-py reads, and the Sentinel form DESIGN.md fixes.

``redis+sentinel://[[user]:password@]host:port[,host:port...]/<service name>[/<db>]`` names the
sentinels to ask, the service (master group) they monitor, and the db index on the data nodes.
Parsing only, no I/O: settings.py validates with it, connections.py builds clients from it. Error
messages never repeat the URL (it may hold a password).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

SENTINEL_SCHEME = "redis+sentinel"
PLAIN_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_DEFAULT_PORT = 26379
SENTINEL_FORM = "redis+sentinel://[:password@]host:port[,host:port...]/service[/db]"


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """A parsed Sentinel REDIS_URL. `username`/`password` authenticate to the data nodes."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def is_sentinel_url(url: str) -> bool:
    """True for the ``redis+sentinel://`` form."""
    return url.startswith(SENTINEL_SCHEME + "://")


def check_redis_url(url: str) -> None:
    """Raise ValueError (a message fit for one line) unless `url` is a REDIS_URL form we take."""
    if is_sentinel_url(url):
        parse_sentinel_url(url)
        return
    if not url.startswith(tuple(scheme + "://" for scheme in PLAIN_SCHEMES)):
        raise ValueError(f"must look like redis://host:port/db or {SENTINEL_FORM}")


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Parse the Sentinel form. Raises ValueError naming what is wrong (never the password)."""
    if not is_sentinel_url(url):
        raise ValueError(f"must look like {SENTINEL_FORM}")
    rest = url[len(SENTINEL_SCHEME) + 3 :]
    if "?" in rest or "#" in rest:
        raise ValueError(f"takes no query or fragment; must look like {SENTINEL_FORM}")
    userinfo, at, rest = rest.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    hosts, _, path = rest.partition("/")
    parts = path.split("/") if path else []
    if not parts or not parts[0] or len(parts) > 2 or (len(parts) == 2 and not parts[1]):
        raise ValueError(f"needs a service name after the sentinels: {SENTINEL_FORM}")
    service = unquote(parts[0])
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise ValueError(f"the db index must be a number: {SENTINEL_FORM}")
        db = int(parts[1])
    sentinels = tuple(_address(item) for item in hosts.split(","))
    return SentinelUrl(sentinels, service, db, username, password)


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    user, colon, password = userinfo.partition(":")
    if not colon:
        raise ValueError(f"credentials must be ':password@' or 'user:password@': {SENTINEL_FORM}")
    return (unquote(user) or None), unquote(password)


def _address(item: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or a bare host (port 26379)."""
    item = item.strip()
    if item.startswith("["):
        host, bracket, tail = item[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ValueError(f"sentinel address {item!r} is not [ipv6]:port")
        port_text = tail[1:] if tail else ""
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ValueError(f"a sentinel address is empty: {SENTINEL_FORM}")
    if not port_text:
        return host, SENTINEL_DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"sentinel address {item!r} has no valid port")
    return host, int(port_text)

"""HTTP GET for the archive path (standard library only): retries with backoff on timeouts,
dropped connections, 5xx and 429 (honouring Retry-After); 404 is "not there"; 418 and 451 stop;
a host that cannot be reached at all (no DNS answer, connection refused, no route) stops at
once: retrying that for half a minute only delays the one line the user needs."""
from __future__ import annotations

import errno
import logging
import socket
import time
import urllib.error
import urllib.parse
import urllib.request

from bt_lstm.data.download.store import DownloadError

logger = logging.getLogger(__name__)

USER_AGENT = "bt-lstm-downloader"
RETRIES = 5
BACKOFF_S = 0.5
MAX_WAIT_S = 120.0


def retry_after(value: str | None, default: float) -> float:
    """Seconds to wait from a Retry-After header (seconds; an HTTP date is not worth parsing
    here), capped so a broken header cannot stall a run for hours."""
    try:
        return min(max(float(value), 0.0), MAX_WAIT_S) if value is not None else default
    except ValueError:
        return default


def blocked_message(status: int, url: str) -> str:
    if status == 418:
        return (f"{url}: HTTP 418, the server has banned this IP address for too many requests; "
                f"wait (bans last minutes to days) before downloading again")
    return (f"{url}: HTTP 451, the service refuses requests from this location; use a mirror "
            f"(--base-url / --api-url) or another exchange")


def http_get(url: str, timeout: float = 30.0, retries: int = RETRIES,
             sleep=time.sleep) -> bytes | None:
    """The body of ``url``; None on 404. DownloadError on 418/451, other 4xx, or when the
    retries run out."""
    last = ""
    for attempt in range(retries + 1):
        wait = BACKOFF_S * 2 ** attempt
        try:
            req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            exc.close()  # its body holds the connection open
            if exc.code == 404:
                return None
            if exc.code in (418, 451):
                raise DownloadError(blocked_message(exc.code, url)) from None
            if exc.code != 429 and exc.code < 500:
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
            last = f"HTTP {exc.code}"
            if exc.code == 429:
                wait = retry_after(exc.headers.get("Retry-After"), wait)
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            if unreachable(reason):
                raise DownloadError(unreachable_message(url, reason)) from None
            last = f"{type(exc).__name__}: {reason}"
        if attempt < retries:
            logger.info("%s: %s; retrying in %.1f s", url, last, wait)
            sleep(wait)
    raise DownloadError(f"{url}: gave up after {retries + 1} tries ({last}); check the network "
                        f"or the URL (--base-url)")


# OSError numbers that mean "no way to this host now": retrying in seconds does not help
_UNREACHABLE = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH}


def unreachable(reason: object) -> bool:
    """True for a DNS failure, a refused connection or no route to the host (not for a
    timeout or a dropped connection, which a retry may cure)."""
    if isinstance(reason, socket.gaierror):
        return True
    if isinstance(reason, ConnectionRefusedError):
        return True
    return isinstance(reason, OSError) and getattr(reason, "errno", None) in _UNREACHABLE


def unreachable_message(url: str, reason: object) -> str:
    host = urllib.parse.urlsplit(url).netloc
    if isinstance(reason, socket.gaierror):
        why = f"the name {host.split(':')[0]} does not resolve ({reason})"
        return (f"{url}: {why}; the network looks unreachable: check the connection, or "
                f"give a reachable mirror with --base-url")
    return (f"{url}: cannot connect to {host} ({reason}); check the connection and the URL "
            f"(--base-url)")

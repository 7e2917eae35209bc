"""Candles from any ccxt exchange: ``fetch_ohlcv`` paged with ``since`` by our own loop (ccxt's
``paginate`` is experimental and can cut history silently), rate limit on, retries with backoff
on timeouts and 429 (honouring Retry-After); 418, 451, unknown symbols and timeframes stop with
one clear error. The still-open last candle is dropped."""
from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit, urlunsplit

from bt_lstm.data.download.store import DownloadError, PartCache, Row
from bt_lstm.data.download.web import BACKOFF_S, RETRIES, blocked_message, retry_after

logger = logging.getLogger(__name__)

PAGE = 1000  # Binance's most candles per call; exchanges with a lower cap return fewer


def _point_at(urls, api_url: str):
    """Every URL in ``exchange.urls['api']`` with its scheme and host replaced by ``api_url``'s
    (ccxt builds each request from these, so the whole public API moves to the mirror)."""
    if isinstance(urls, str):
        new = urlsplit(api_url.rstrip("/"))
        old = urlsplit(urls)
        return urlunsplit((new.scheme, new.netloc, new.path + old.path, old.query,
                           old.fragment))
    if isinstance(urls, dict):
        return {k: _point_at(v, api_url) for k, v in urls.items()}
    return urls


def open_exchange(name: str, api_url: str | None = None, timeout_s: float = 30.0):
    """A ccxt exchange with the rate limiter on, pointed at ``api_url`` when given, markets
    loaded; DownloadError for an unknown exchange."""
    import ccxt

    if name not in ccxt.exchanges:
        raise DownloadError(f"--exchange {name!r} is not a ccxt exchange; e.g. binance, "
                            f"bybit, kraken, okx (python -c 'import ccxt; "
                            f"print(ccxt.exchanges)' lists them)")
    exchange = getattr(ccxt, name)({"enableRateLimit": True, "timeout": int(timeout_s * 1000)})
    if api_url:
        exchange.urls["api"] = _point_at(exchange.urls["api"], api_url)
    if name.startswith("binance"):
        exchange.options["fetchMarkets"] = ["spot"]  # futures markets are not needed here
    status: dict = {}
    original = exchange.on_rest_response

    def remember_status(code, reason, url, method, headers, body, *rest):
        status.update(code=int(code), headers=dict(headers or {}), url=url)
        return original(code, reason, url, method, headers, body, *rest)
    exchange.on_rest_response = remember_status
    exchange.bt_lstm_status = status
    _call(exchange, exchange.load_markets)
    return exchange


def _call(exchange, fn, *args, retries: int = RETRIES, sleep=time.sleep, **kwargs):
    """``fn(*args)`` with retries on network faults; 418/451 and bad requests stop at once."""
    import ccxt

    last = ""
    for attempt in range(retries + 1):
        wait = BACKOFF_S * 2 ** attempt
        try:
            return fn(*args, **kwargs)
        except (ccxt.BadSymbol, ccxt.BadRequest) as exc:
            raise DownloadError(f"{exchange.id}: {_short(exc)}") from None
        except ccxt.NetworkError as exc:  # timeouts, 429, 418, 5xx, refused connections
            code = exchange.bt_lstm_status.get("code") if hasattr(
                exchange, "bt_lstm_status") else None
            url = exchange.bt_lstm_status.get("url", exchange.id) if code else exchange.id
            if code in (418, 451):
                raise DownloadError(blocked_message(code, url)) from None
            if code == 429 or isinstance(exc, ccxt.RateLimitExceeded):
                wait = retry_after(exchange.bt_lstm_status.get("headers", {}).get(
                    "Retry-After"), wait)
            last = f"{type(exc).__name__}: {_short(exc)}"
        except ccxt.ExchangeError as exc:
            raise DownloadError(f"{exchange.id}: {_short(exc)}") from None
        if attempt < retries:
            logger.info("%s: %s; retrying in %.1f s", exchange.id, last, wait)
            sleep(wait)
    raise DownloadError(f"{exchange.id}: gave up after {retries + 1} tries ({last}); check the "
                        f"network or --api-url")


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def market_symbol(exchange, symbol: str) -> str:
    """'SOLUSDT' or 'SOL/USDT' -> the exchange's unified symbol; DownloadError if unknown."""
    if symbol in exchange.markets:
        return symbol
    by_id = exchange.markets_by_id.get(symbol) or exchange.markets_by_id.get(symbol.upper())
    if by_id:
        spot = [m for m in by_id if m.get("spot")] or by_id
        return spot[0]["symbol"]
    raise DownloadError(f"{exchange.id} has no market {symbol!r}; give its id (SOLUSDT) or "
                        f"unified symbol (SOL/USDT); nothing written")


def fetch_ccxt(exchange, symbol: str, tf: str, bar_ms: int, start_ms: int, end_ms: int,
               now_ms: int, cache: PartCache, progress=None) -> list[Row]:
    """Every closed candle in [start_ms, end_ms), page by page from ``start_ms``.

    A page is kept in ``cache`` once a later page exists (a rerun after a kill resumes from
    there); the loop stops at an empty page, at ``end_ms`` or at the still-open candle.
    """
    if exchange.timeframes and tf not in exchange.timeframes:
        raise DownloadError(f"{exchange.id} has no timeframe {tf!r}; it has "
                            f"{', '.join(exchange.timeframes)}")
    stop = min(end_ms, now_ms - now_ms % bar_ms)  # open times before this are closed
    total = max(1, -(-(stop - start_ms) // (bar_ms * PAGE)))
    step = progress(total, "page") if progress is not None else None
    rows: list[Row] = []
    since = start_ms
    pending = None  # the last fetched page: kept in the cache once a later page exists
    while since < stop:
        key = f"{exchange.id}-{since}"
        page = cache.get(key)
        if page is None:
            raw = _call(exchange, exchange.fetch_ohlcv, symbol, tf, since, PAGE)
            page = [r for r in ((int(c[0]), *(float(x) for x in c[1:6])) for c in raw
                                if c[0] >= since and None not in c[1:6])
                    if r[0] + bar_ms <= now_ms]  # the still-open candle is never kept
            if page and pending is not None:
                cache.put(*pending)
            pending = (key, page) if page else None
        keep = [r for r in page if r[0] < end_ms]
        rows += keep
        if step is not None:
            step(key)
        if not page or len(keep) < len(page) or page[-1][0] + bar_ms >= stop:
            break
        since = page[-1][0] + bar_ms
    return rows

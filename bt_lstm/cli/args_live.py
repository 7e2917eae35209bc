"""The live family's flags (live, serve, replay): part of the one registry in ``args.py``,
kept in their own file so that file stays readable. Defined here once, listed by
``cli/live.py``, ``cli/serve.py`` and ``cli/replay.py``."""
from __future__ import annotations

from bt_lstm.cli.flag import Flag

F, I = float, int  # noqa: E741

LIVE_FLAGS: tuple[Flag, ...] = (
    # market and models
    Flag("--models", "a model bundle (live: forecasts in-process)", metavar="DIR"),
    Flag("--model-server", "forecasts from `bt-lstm serve` at this URL", metavar="URL"),
    # feed
    Flag("--ws-url", "kline WebSocket host (default: Binance spot)", metavar="URL",
         default="wss://stream.binance.com:9443"),
    Flag("--rest-url", "REST host for /api/v3/klines backfills (default: Binance spot)",
         metavar="URL", default="https://api.binance.com"),
    Flag("--backoff", "first reconnect/retry wait in seconds, doubled each time", F, "S",
         default=0.5, lo=0, lo_open=True, example="0.5"),
    Flag("--cross-wait", "a bundle with cross:SYMBOL groups: seconds to wait for the other "
         "market's candle of the same close (then REST once more, then its last candle known)",
         F, "S", default=10.0, lo=0, example="10"),
    Flag("--rest-tries", "REST attempts before giving up", I, "N", default=5, lo=1,
         example="5"),
    # run
    Flag("--state", "state folder (default live/<SYMBOL>_<tf>); --role decide: a folder (SQLite, "
         "one decide process; <DIR>/<SYMBOL>_<tf>/ per market, default live/) or a "
         "postgresql:// URL shared by several decide processes", metavar="DIR|URL"),
    Flag("--stop-after", "stop once N candles are decided in this state folder (all runs); "
         "--bus: ingest once N decided candles per symbol are published, engine once every "
         "market has N forecasts, decide once every market has N decisions", I, "N", lo=1,
         example="300"),
    Flag("--status-port", "serve a status page on 127.0.0.1:P (with --role decide: every "
         "market's decisions and the bus's length, pending and lag per stream and group)", I,
         "P", lo=1, hi=65535, example="8080"),
    Flag("--export", "with --state postgresql://...: write every market's decisions.csv and "
         "fills.csv (the columns of a state folder's) to DIR/<SYMBOL>_<tf>/, then exit",
         metavar="DIR"),
    # bus
    Flag("--bus", "redis://HOST:6379/0: run one role of the split pipeline (needs --role or "
         "--status)", metavar="URL"),
    Flag("--role", "ingest: kline feed -> candles:<S>:<tf>; engine: candles -> forecasts:<S>:<tf>; "
         "decide: forecasts -> decisions and paper fills in --state",
         choices=("ingest", "engine", "decide")),
    Flag("--status", "print length, pending and lag per stream and consumer group, and the "
         "dead-letter counts, then exit", kind=None, default=False),
    Flag("--models-root", "engine: one bundle per market in DIR/<SYMBOL>_<tf>/ (else --models "
         "serves every market)", metavar="DIR"),
    Flag("--torch-threads", "engine: torch intra-op threads (1: one window per forecast, and "
         "several engines share the cores; 0 leaves torch's choice)", I, "N", default=1, lo=0,
         example="1"),
    Flag("--consumer", "consumer name in the group (default HOST-PID); give the same name on "
         "restart to take this consumer's pending entries back at once", metavar="NAME"),
    Flag("--claim-idle", "reclaim entries pending longer than S seconds with another consumer "
         "(XAUTOCLAIM)", F, "S", default=30.0, lo=0, example="30"),
    Flag("--retention", "stream trimming: N entries per stream (MAXLEN ~) or an age such as 90d "
         "(MINID ~); keep more than the bundles' warm-up", metavar="N|AGE", default="100000"),
    Flag("--history-bars", "ingest on a fresh stream: candles published before the first "
         "decided one, the engines' warm-up (>= the bundle's)", I, "N", default=1000, lo=0,
         example="1000"),
    Flag("--batch", "engine/decide: read the next entry of up to N streams at once and handle "
         "them as one batch (a candle close of N markets: one network call per model); also the "
         "entries per stream taken back at start or reclaimed at once", I, "N", default=64,
         lo=1, example="64"),
    Flag("--bus-prefix", "prefix of every key (several deployments on one Redis database)",
         metavar="P", default=""),
    Flag("--latency-out", "decide: append one JSON line per committed candle, [symbol, "
         "timeframe, open_ms, candle XADD time, commit time] (Unix seconds), after each batch",
         metavar="FILE"),
    # serve
    Flag("--host", "address to listen on", metavar="H", default="127.0.0.1"),
    Flag("--port", "port to listen on (serve default 8000, replay 9000)", I, "P", lo=1,
         hi=65535, example="8000"),
    Flag("--workers", "server processes, each with the bundle loaded; one per core for "
         "throughput; /v1/reload needs 1", I, "N", default=1, lo=1, example="2"),
    # replay
    Flag("--speed", "candles a second", F, "N", default=10.0, lo=0, lo_open=True, example="200"),
    Flag("--updates", "unfinished-candle messages before each close", I, "N", default=2, lo=0,
         example="2"),
    Flag("--faults", "drop,duplicate,gap,reorder,shutdown (default none)", kind="list",
         metavar="A,B", choices=("drop", "duplicate", "gap", "reorder", "shutdown"),
         default="", example="drop,gap"),
    Flag("--fault-every", "each fault fires once every N candles", I, "N", default=25, lo=1,
         example="25"),
)

"""Live paper trading: exchange candles -> the backtest's Forecaster -> the backtest's decision.

Belongs here: the Binance kline feed client (``feed.py``), kline parsing (``klines.py``), the
engine and paper broker (``engine.py``), SQLite state (``state.py``), the FastAPI model server
(``server.py``), the replay server (``replay.py``), the status page (``status.py``). Paper
trading only: no order ever reaches an exchange. The only home of fastapi, uvicorn, websockets
and sqlite3 (import contracts in setup.cfg).
"""

"""The soak's processes: its own redis-server (append-only file, fsync always), a fresh
PostgreSQL schema, the role processes (killed and restarted by name), the multi-market replay
in a thread, and RSS readings from /proc."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MB (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class RedisServer:
    """``redis-server`` on a free loopback port, ``appendonly yes``, ``appendfsync always``, its
    files in ``folder``; ``kill()`` is SIGKILL, ``start()`` again loads the append-only file."""

    def __init__(self, folder: Path, exe: str | None = None) -> None:
        self.exe = exe or shutil.which("redis-server")
        if self.exe is None:
            raise FileNotFoundError("redis-server not found on PATH (Debian: apt-get install "
                                    "redis-server; .ci/run installs it)")
        self.folder, self.port = folder, free_port()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.log = open(folder / "redis.log", "ab")

    @property
    def url(self) -> str:
        """The server's URL (database 0: the server is the soak's own)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 60.0) -> None:
        """Start it and wait until it answers PING (after loading its append-only file)."""
        import redis

        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--aof-load-truncated", "yes", "--protected-mode", "no"],
            stdout=self.log, stderr=subprocess.STDOUT)
        r = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if r.ping():
                    return
            except redis.exceptions.BusyLoadingError:
                pass
            except redis.RedisError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited: see {self.folder / 'redis.log'}")
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer within {timeout:.0f} s")

    def kill(self) -> None:
        """SIGKILL (no shutdown, no final fsync: what is on disk is what fsync wrote)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def close(self) -> None:
        """Kill it and close its log."""
        self.kill()
        self.log.close()


def pg_schema(url: str, schema: str) -> str:
    """Create ``schema``; the URL whose search_path is it."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


def drop_schema(url: str, schema: str) -> None:
    """Drop the soak's schema and everything in it."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@dataclass
class Role:
    """One role process, by name (``ingest``, ``engine0``, ``decide0``): its arguments, its
    current process and every incarnation's (pid, start, end) times."""
    name: str
    args: list[str]
    logs: Path
    proc: subprocess.Popen | None = None
    lives: list[dict] = field(default_factory=list)

    def start(self) -> None:
        """Start a new incarnation (its output to ``<logs>/<name>.<n>.log``)."""
        n = len(self.lives)
        out = open(self.logs / f"{self.name}.{n}.log", "wb")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen([sys.executable, str(REPO / "runners" / "live.py"),
                                      *[a.replace("{n}", str(n)) for a in self.args]],
                                     cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        self.lives.append({"pid": self.proc.pid, "start": time.time(), "end": None,
                           "rss": []})

    def kill(self) -> None:
        """SIGKILL, then wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        if self.lives and self.lives[-1]["end"] is None:
            self.lives[-1]["end"] = time.time()

    def sample(self, now: float) -> None:
        """Record the current incarnation's RSS."""
        if self.proc is not None and self.proc.poll() is None:
            mb = rss_mb(self.proc.pid)
            if mb is not None:
                self.lives[-1]["rss"].append((round(now, 2), round(mb, 1)))

    def alive(self) -> bool:
        """Whether the current incarnation runs."""
        return self.proc is not None and self.proc.poll() is None


class ReplayThread:
    """``MarketsReplay`` serving in a thread of its own (its own event loop)."""

    def __init__(self, replay) -> None:
        self.replay = replay
        self.loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        ready = threading.Event()

        def go() -> None:
            asyncio.set_event_loop(self.loop)
            self._stop = asyncio.Event()
            fut = self.loop.create_future()
            fut.add_done_callback(lambda _f: ready.set())
            try:
                self.loop.run_until_complete(replay.serve_forever("127.0.0.1", 0, fut,
                                                                  self._stop))
            finally:
                self.loop.close()

        self.thread = threading.Thread(target=go, daemon=True, name="replay")
        self.thread.start()
        if not ready.wait(30):
            raise RuntimeError("the replay server did not start")
        self.port = replay.port

    def call(self, fn, *args):
        """Run ``fn(*args)`` on the replay's loop; its result."""
        async def go():
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(go(), self.loop).result(30)

    def close(self) -> None:
        """Stop serving and join the thread (again: nothing)."""
        if self._stop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(15)

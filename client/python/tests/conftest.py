"""Fixtures: a real litebrokerd on a fresh database in a temporary folder.

The broker binary is $LITEBROKERD, else target/debug/litebrokerd of this
repository (scripts/test.sh builds it before running pytest).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def broker_binary() -> str:
    exe = os.environ.get("LITEBROKERD") or str(REPO / "target" / "debug" / "litebrokerd")
    if not os.path.exists(exe):
        pytest.fail(f"no broker binary at {exe}: run `cargo build --bins` (scripts/test.sh does) or set LITEBROKERD")
    return exe


SCHEMA = """
CREATE TABLE skus (
    id INTEGER PRIMARY KEY,
    sku TEXT NOT NULL UNIQUE,
    description TEXT,
    qty INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE sales (
    date TEXT NOT NULL,
    sku TEXT NOT NULL,
    qty INTEGER NOT NULL,
    UNIQUE (date, sku)
);
"""


class Broker:
    """A litebrokerd process serving `db`, stopped by the fixture."""

    def __init__(self, db: Path, args: list[str]) -> None:
        self.db = db
        self.log_path = db.parent / "broker.log"
        self.args = args
        self.proc: subprocess.Popen | None = None
        #: The `litebroker` CLI built with the broker: another process that writes.
        self.cli = str(Path(broker_binary()).with_name("litebroker"))

    def start(self) -> "Broker":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [broker_binary(), "--db", str(self.db), *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.wait_ready()
        return self

    def wait_ready(self, deadline_s: float = 30.0) -> None:
        import litebroker

        f = litebroker.ConnectionFactory(self.db, client_name="pytest-ready", timeout=2.0)
        end = time.monotonic() + deadline_s
        last: Exception | None = None
        while time.monotonic() < end:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"litebrokerd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                f.status()
                return
            except Exception as e:  # not listening yet
                last = e
                time.sleep(0.05)
        pytest.fail(f"litebrokerd not ready within {deadline_s} s ({last}):\n{self.log()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@pytest.fixture
def make_broker(tmp_path):
    """make_broker(*args) starts a broker on tmp_path/data/app.db with the schema."""
    started: list[Broker] = []

    def make(*args: str, schema: bool = True) -> Broker:
        data = tmp_path / "data"
        data.mkdir(exist_ok=True)
        b = Broker(data / "app.db", list(args)).start()
        started.append(b)
        if schema:
            import litebroker

            f = litebroker.ConnectionFactory(b.db, client_name="pytest-schema")
            try:
                f.executescript(SCHEMA)
            except litebroker.OperationalError as e:
                if "already exists" not in str(e):
                    raise
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def broker(make_broker):
    return make_broker()


@pytest.fixture
def in_data_dir(broker, monkeypatch):
    """cwd = the folder holding data/app.db, so the note's default path applies."""
    monkeypatch.chdir(broker.db.parent.parent)
    return broker


def run_python(code: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )

"""The operational note's snippets, run as written with only the import changed
(`from src.db import …` -> `from litebroker import …`). Where the note writes a
placeholder (`INSERT INTO skus (...) VALUES (...)`), real columns are filled in;
nothing else is changed."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import time

import pytest

from conftest import run_python

LOCK_ARGS = ("--busy-timeout-ms", "200", "--lock-retries", "1", "--retry-base-ms", "100")


def sqlite3_holding(db, seconds: float) -> subprocess.Popen:
    """The sqlite3 CLI holding BEGIN EXCLUSIVE on db; returns once it holds it."""
    p = subprocess.Popen(
        ["sqlite3", str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert p.stdin and p.stdout
    p.stdin.write(f"BEGIN EXCLUSIVE;\nSELECT 1;\n.print LOCKED\n.shell sleep {seconds}\nCOMMIT;\n")
    p.stdin.flush()
    for line in p.stdout:
        if line.strip() == "LOCKED":
            return p
    raise AssertionError("sqlite3 did not take the lock")


def test_connection_factory_pattern(in_data_dir):
    from litebroker import get_connection_factory

    factory = get_connection_factory()

    # For reads (unlimited)
    with factory.reader() as conn:
        rows = conn.execute("SELECT * FROM skus").fetchall()

    # For writes (single writer at a time)
    with factory.writer() as conn:
        conn.execute("INSERT INTO skus (sku, description) VALUES ('N1', 'note')")
        conn.commit()

    assert rows == []
    with factory.reader() as conn:
        assert conn.execute("SELECT sku, description FROM skus").fetchall() == [("N1", "note")]


def test_retry_on_locked_usage(in_data_dir):
    from litebroker import get_connection_factory, retry_on_locked

    @retry_on_locked(max_attempts=3, idempotent_only=True)
    def load_skus(conn):
        return conn.execute("SELECT * FROM skus").fetchall()

    factory = get_connection_factory()
    with factory.writer() as conn:
        conn.execute("INSERT INTO skus (sku) VALUES ('R1')")
    with factory.reader() as conn:
        assert [r[1] for r in load_skus(conn)] == ["R1"]


def test_1_concurrent_writers_second_waits_for_first(in_data_dir):
    import threading
    from litebroker import get_connection_factory

    factory = get_connection_factory()
    spans = {}

    def writer_task(sku_id):
        with factory.writer() as conn:
            start = time.monotonic()
            conn.execute("INSERT INTO skus (sku, description) VALUES (?, ?)", (sku_id, "Test"))
            conn.commit()
            time.sleep(2)  # Hold connection for 2 seconds
            spans[sku_id] = (start, time.monotonic())

    # Launch 2 writers simultaneously
    t1 = threading.Thread(target=writer_task, args=("SKU1",))
    t2 = threading.Thread(target=writer_task, args=("SKU2",))

    t1.start()
    t2.start()
    t1.join()
    t2.join()

    # Expected: t2 waits for t1 to complete (single-writer discipline)
    (a0, a1), (b0, b1) = sorted(spans.values())
    assert b0 >= a1, f"the second writer started at {b0} before the first ended at {a1}"
    with factory.reader() as conn:
        assert conn.execute("SELECT sku FROM skus ORDER BY sku").fetchall() == [("SKU1",), ("SKU2",)]


def test_2_forced_lock_external_process(make_broker):
    b = make_broker(*LOCK_ARGS)
    holder = sqlite3_holding(b.db, 30)
    try:
        t0 = time.monotonic()
        # Terminal 2: Try to write (should fail after timeout)
        r = run_python(
            "from litebroker import open_connection; conn = open_connection(); "
            "conn.execute('INSERT INTO skus (sku) VALUES (\"TEST\")')",
            cwd=b.db.parent.parent,
        )
        took = time.monotonic() - t0
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode != 0
    assert "DatabaseLockedError" in r.stderr and "Database is locked" in r.stderr, r.stderr
    # The client's schedule (0.5 + 1 + 2 s) on top of the broker's own wait.
    assert took >= 3.5, took
    # Nothing of it was applied, and the database is usable once the lock is gone.
    import litebroker

    f = litebroker.ConnectionFactory(b.db)
    assert f.query("SELECT count(*) FROM skus WHERE sku = 'TEST'") == [(0,)]
    f.execute("INSERT INTO skus (sku) VALUES ('TEST')")
    assert f.query("SELECT count(*) FROM skus WHERE sku = 'TEST'") == [(1,)]


def test_3_retry_logic_reads_do_not_wait_for_a_locked_writer(make_broker, monkeypatch):
    """The note expected reads to be retried and fail while another process holds
    an exclusive lock; with WAL and the read-only connection they simply work."""
    b = make_broker(*LOCK_ARGS)
    monkeypatch.chdir(b.db.parent.parent)
    from litebroker import open_connection, retry_on_locked

    @retry_on_locked(max_attempts=3)
    def read_skus():
        conn = open_connection()
        return conn.execute("SELECT COUNT(*) FROM skus").fetchone()[0]

    holder = sqlite3_holding(b.db, 30)
    try:
        t0 = time.monotonic()
        count = read_skus()
        assert count == 0
        assert time.monotonic() - t0 < 2
    finally:
        holder.kill()
        holder.wait()


def test_locked_write_is_retried_on_the_schedule_then_caught_as_operational_error(make_broker, monkeypatch):
    b = make_broker(*LOCK_ARGS)
    monkeypatch.chdir(b.db.parent.parent)
    import litebroker
    from litebroker import get_connection_factory

    factory = get_connection_factory()
    holder = sqlite3_holding(b.db, 30)
    try:
        t0 = time.monotonic()
        try:
            with factory.writer() as conn:
                conn.execute("INSERT INTO skus (sku) VALUES ('L1')")
        except sqlite3.OperationalError as e:
            caught = e
        took = time.monotonic() - t0
        t0 = time.monotonic()
        with pytest.raises(sqlite3.OperationalError) as one_shot:
            factory.execute("INSERT INTO skus (sku) VALUES ('L2')")
        took_one_shot = time.monotonic() - t0
    finally:
        holder.kill()
        holder.wait()
    assert isinstance(caught, litebroker.DatabaseLockedError)
    assert str(caught) == litebroker.LOCKED_USER_TEXT
    assert str(caught).startswith("Error: Database is locked")
    assert "lock" in caught.detail.lower()
    assert caught.kind == "locked"
    assert took >= 3.5 and took_one_shot >= 3.5, (took, took_one_shot)
    assert isinstance(one_shot.value, litebroker.DatabaseLockedError)
    assert factory.query("SELECT count(*) FROM skus") == [(0,)]


def test_best_practices_snippets(in_data_dir, caplog):
    from litebroker import get_connection_factory, retry_on_locked

    factory = get_connection_factory()
    skus = [f"B{i}" for i in range(10)]

    # Use transactions explicitly for writes
    with factory.writer() as conn:
        conn.execute("BEGIN IMMEDIATE")  # Acquire lock early
        conn.execute("INSERT INTO skus (sku) VALUES ('X1')")
        conn.execute("INSERT INTO skus (sku) VALUES ('X2')")
        conn.commit()

    # GOOD: Reuse connection
    with factory.writer() as conn:
        for sku in skus:
            conn.execute("INSERT INTO skus (sku) VALUES (?)", (sku,))  # ✅ Single connection
        conn.commit()

    # GOOD: Batch quickly, release lock
    batch = [(f"M{i}",) for i in range(50)]
    with factory.writer() as conn:
        conn.executemany("INSERT INTO skus (sku) VALUES (?)", batch)  # Fast bulk insert  ✅
        conn.commit()

    # GOOD: Idempotent with unique constraint (the note's record_sale; its `conn`
    # is a module-level connection)
    conn = factory

    @retry_on_locked(max_attempts=3)
    def record_sale(date, sku, qty):
        conn.execute(
            "INSERT INTO sales (date, sku, qty) VALUES (?, ?, ?) "
            "ON CONFLICT(date, sku) DO UPDATE SET qty = qty + excluded.qty",
            (date, sku, qty),
        )  # ✅ Idempotent

    record_sale("2026-02-17", "X1", 2)
    record_sale("2026-02-17", "X1", 3)

    # GOOD: Log and inform user
    import logging

    logger = logging.getLogger("app")
    shown = []

    def show_error_dialog(title, text):
        shown.append((title, text))

    try:
        with factory.writer() as conn:
            conn.execute("INSERT INTO no_such_table VALUES (1)")
    except sqlite3.OperationalError as e:
        logger.error(f"Database locked: {e}", exc_info=True)
        show_error_dialog("Database Locked", "Close other instances and retry.")

    with factory.reader() as r:
        assert r.execute("SELECT count(*) FROM skus").fetchone()[0] == 62
        assert r.execute("SELECT qty FROM sales").fetchall() == [(5,)]
    assert shown and "no such table" in caplog.text


def test_connection_tracking_does_not_leak(in_data_dir):
    from litebroker import get_active_connections_count, get_connection_factory

    before = get_active_connections_count()  # other tests' factories keep theirs
    factory = get_connection_factory()
    for _ in range(3):  # warm: the factory keeps a few connections for reuse
        with factory.reader() as conn:
            conn.execute("SELECT 1").fetchall()
        with factory.writer() as conn:
            conn.execute("SELECT 1")
    warm = get_active_connections_count()
    print(f"Active connections: {warm}")
    assert 0 < warm - before <= 5
    for i in range(30):
        with factory.reader() as conn:
            conn.execute("SELECT count(*) FROM skus").fetchone()
        with factory.writer() as conn:
            conn.execute("INSERT INTO skus (sku) VALUES (?)", (f"T{i}",))
    assert get_active_connections_count() == warm


def test_integrity_after_lock(make_broker):
    b = make_broker(*LOCK_ARGS)
    import litebroker

    f = litebroker.ConnectionFactory(b.db)
    holder = sqlite3_holding(b.db, 30)
    try:
        with pytest.raises(litebroker.DatabaseLockedError):
            with f.writer() as conn:
                conn.execute("INSERT INTO skus (sku) VALUES ('P1')")
    finally:
        holder.kill()
        holder.wait()
    report = f.verify()
    assert report["integrity_problems"] == [] and report["foreign_key_problems"] == [], report
    with sqlite3.connect(b.db) as c:
        assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert c.execute("PRAGMA foreign_key_check").fetchall() == []
        assert c.execute("SELECT count(*) FROM skus").fetchone() == (0,)

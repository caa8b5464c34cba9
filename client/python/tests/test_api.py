"""The package's contract beyond the note: sessions, rollback, timeouts, types,
the retry schedule, processes and threads, no broker, admin calls."""

from __future__ import annotations

import math
import multiprocessing
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

import litebroker
from litebroker import ConnectionFactory


def test_exceptions_subclass_sqlite3s():
    assert issubclass(litebroker.OperationalError, sqlite3.OperationalError)
    assert issubclass(litebroker.IntegrityError, sqlite3.IntegrityError)
    assert issubclass(litebroker.ProgrammingError, sqlite3.ProgrammingError)
    assert issubclass(litebroker.DataError, sqlite3.DataError)
    assert issubclass(litebroker.DatabaseLockedError, litebroker.OperationalError)
    assert issubclass(litebroker.BrokerUnavailableError, sqlite3.OperationalError)
    assert issubclass(litebroker.WriterTimeoutError, TimeoutError)
    assert issubclass(litebroker.WriterTimeoutError, sqlite3.OperationalError)
    assert issubclass(litebroker.OperationalError, litebroker.Error)


def test_rollback_on_exception_leaves_nothing(broker):
    f = ConnectionFactory(broker.db)
    with pytest.raises(RuntimeError):
        with f.writer() as conn:
            conn.execute("INSERT INTO skus (sku) VALUES ('R1')")
            conn.executemany("INSERT INTO skus (sku) VALUES (?)", [("R2",), ("R3",)])
            assert conn.execute("SELECT count(*) FROM skus").fetchone() == (3,)  # sees its own writes
            raise RuntimeError("boom")
    assert f.query("SELECT count(*) FROM skus") == [(0,)]


def test_commit_inside_writer_starts_a_new_transaction(broker):
    f = ConnectionFactory(broker.db)
    with pytest.raises(RuntimeError):
        with f.writer() as conn:
            conn.execute("INSERT INTO skus (sku) VALUES ('C1')")
            conn.commit()
            assert not conn.in_transaction
            conn.execute("BEGIN")  # accepted, nothing to do
            conn.execute("INSERT INTO skus (sku) VALUES ('C2')")
            assert conn.in_transaction
            raise RuntimeError("after the commit")
    assert f.query("SELECT sku FROM skus") == [("C1",)]
    with f.writer() as conn:
        conn.execute("INSERT INTO skus (sku) VALUES ('C3')")
        conn.execute("ROLLBACK")
        conn.execute("INSERT INTO skus (sku) VALUES ('C4')")
    assert f.query("SELECT sku FROM skus ORDER BY sku") == [("C1",), ("C4",)]


def test_a_failed_statement_leaves_the_session_usable(broker):
    f = ConnectionFactory(broker.db)
    with f.writer() as conn:
        conn.execute("INSERT INTO skus (sku) VALUES ('U1')")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO skus (sku) VALUES ('U1')")
        conn.execute("INSERT INTO skus (sku) VALUES ('U2')")
    assert f.query("SELECT sku FROM skus ORDER BY sku") == [("U1",), ("U2",)]


def test_writer_timeout_names_the_holder_in_this_process(broker):
    f = ConnectionFactory(broker.db)
    held = threading.Event()
    done = threading.Event()

    def hold():
        with f.writer() as conn:
            conn.execute("INSERT INTO skus (sku) VALUES ('H1')")
            held.set()
            done.wait(10)

    t = threading.Thread(target=hold, name="inventory-sync")
    t.start()
    held.wait(10)
    try:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError) as e:
            with f.writer(timeout=0.5):
                pass
        assert 0.4 < time.monotonic() - t0 < 3
        assert "inventory-sync" in str(e.value), str(e.value)
        assert isinstance(e.value, sqlite3.OperationalError)
    finally:
        done.set()
        t.join()


def test_writer_timeout_names_the_holder_in_another_process(broker):
    code = (
        "import litebroker, time\n"
        f"f = litebroker.ConnectionFactory({str(broker.db)!r}, client_name='stock-importer')\n"
        "with f.writer() as c:\n"
        "    c.execute(\"INSERT INTO skus (sku) VALUES ('P1')\")\n"
        "    print('HELD', flush=True)\n"
        "    time.sleep(4)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout and p.stdout.readline().strip() == "HELD"
        f = ConnectionFactory(broker.db)
        with pytest.raises(litebroker.WriterTimeoutError) as e:
            with f.writer(timeout=1):
                pass
        assert "stock-importer" in str(e.value), str(e.value)
    finally:
        p.wait(20)
    assert p.returncode == 0


VALUES = [
    0,
    -(2**63),
    2**63 - 1,
    1.5,
    -0.0,
    math.inf,
    "",
    "héllo wörld ✓ 𝄞",
    b"",
    b"\x00\xff\x10",
    None,
]


def test_every_type_round_trips(broker):
    f = ConnectionFactory(broker.db)
    f.execute("CREATE TABLE vals (i INTEGER PRIMARY KEY, v ANY) STRICT")
    with f.writer() as conn:
        conn.executemany("INSERT INTO vals (i, v) VALUES (?, ?)", list(enumerate(VALUES)))
        # bytearray and memoryview are stored as blobs, bool as an integer
        conn.execute("INSERT INTO vals (i, v) VALUES (?, ?)", (100, bytearray(b"ba")))
        conn.execute("INSERT INTO vals (i, v) VALUES (?, ?)", (101, memoryview(b"mv")))
        conn.execute("INSERT INTO vals (i, v) VALUES (:i, :v)", {"i": 102, "v": True})
        conn.execute("INSERT INTO vals (i, v) VALUES (?, ?)", [103, False])
        in_session = conn.execute("SELECT v FROM vals ORDER BY i").fetchall()
    read = f.query("SELECT v FROM vals ORDER BY i")
    expected = [(v,) for v in VALUES] + [(b"ba",), (b"mv",), (1,), (0,)]
    assert read == expected
    assert in_session == expected
    for got, want in zip(read, expected):
        assert type(got[0]) is type(want[0])
    # Through the reader with parameters, and the one-shot write's RETURNING.
    with f.reader() as r:
        assert r.execute("SELECT ?, ?, ?, ?, ?", (2**63 - 1, 0.25, "t", b"b", None)).fetchone() == (
            2**63 - 1,
            0.25,
            "t",
            b"b",
            None,
        )
    cur = f.execute("INSERT INTO vals (i, v) VALUES (?, ?) RETURNING i, v", (200, b"r"))
    assert cur.fetchall() == [(200, b"r")] and cur.description[1][0] == "v"


@pytest.mark.parametrize(
    "params, index",
    [(("ok", [1]), "2"), ((object(),), "1"), (("a", "b", {"x": 1}), "3"), ({"sku": 1.5, "qty": set()}, ":qty")],
)
def test_bad_types_raise_type_error_naming_the_parameter(broker, params, index):
    f = ConnectionFactory(broker.db)
    sql = (
        "INSERT INTO skus (sku, qty) VALUES (:sku, :qty)"
        if isinstance(params, dict)
        else "SELECT " + ", ".join("?" * len(params))
    )
    with pytest.raises(TypeError, match=f"parameter {index} "):
        f.execute(sql, params)
    with pytest.raises(TypeError, match=f"parameter {index} "):
        with f.reader() as r:
            r.execute(sql, params)
    with pytest.raises(TypeError, match=f"parameter {index} "):
        with f.writer() as w:
            w.execute(sql, params)


def test_ints_beyond_64_bits_raise_overflow_error(broker):
    f = ConnectionFactory(broker.db)
    for big in (2**63, -(2**63) - 1, 10**30):
        with pytest.raises(OverflowError, match="parameter 2"):
            f.execute("INSERT INTO skus (sku, qty) VALUES (?, ?)", ("O", big))
    assert f.query("SELECT count(*) FROM skus") == [(0,)]


def test_cursor_api_rows_and_named_parameters(broker):
    f = ConnectionFactory(broker.db)
    f.executescript(
        "INSERT INTO skus (sku, qty) VALUES ('A', 1); INSERT INTO skus (sku, qty) VALUES ('B', 2);"
        "INSERT INTO skus (sku, qty) VALUES ('C', 3);"
    )
    with f.reader() as conn:
        cur = conn.execute("SELECT sku, qty FROM skus WHERE qty >= :min ORDER BY sku", {"min": 1})
        assert [d[0] for d in cur.description] == ["sku", "qty"]
        assert cur.fetchone() == ("A", 1)
        assert cur.fetchmany(1) == [("B", 2)]
        assert list(cur) == [("C", 3)]
        assert cur.fetchone() is None
        conn.row_factory = litebroker.Row
        row = conn.execute("SELECT sku, qty FROM skus WHERE sku = @s", {"s": "B"}).fetchone()
        assert row["SKU"] == "B" and row[1] == 2 and row.keys() == ["sku", "qty"] and tuple(row) == ("B", 2)
        conn.row_factory = sqlite3.Row
        assert conn.execute("SELECT qty FROM skus WHERE sku = $s", {"s": "C"}).fetchone()["qty"] == 3
        conn.row_factory = lambda cursor, values: dict(zip([d[0] for d in cursor.description], values))
        assert conn.execute("SELECT sku FROM skus WHERE sku = 'A'").fetchone() == {"sku": "A"}
        with pytest.raises(sqlite3.ProgrammingError, match="You did not supply a value for binding parameter :s"):
            conn.execute("SELECT :s", {"t": 1})
        with pytest.raises(sqlite3.ProgrammingError, match="Incorrect number of bindings"):
            conn.execute("SELECT ?, ?", (1,))
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("DELETE FROM skus")
    with f.writer() as w:
        # A table created in this session: the named parameters are found without it.
        w.execute("CREATE TABLE fresh (a, b)")
        w.execute("INSERT INTO fresh VALUES (:b, :a)", {"a": 1, "b": 2})
        assert w.execute("SELECT a, b FROM fresh").fetchall() == [(2, 1)]
        cur = w.execute("UPDATE skus SET qty = qty + 1")
        assert cur.rowcount == 3
        cur = w.execute("INSERT INTO skus (sku) VALUES ('D')")
        assert cur.lastrowid == 4
        w.executescript("BEGIN; INSERT INTO skus (sku) VALUES ('E'); INSERT INTO skus (sku) VALUES ('F'); COMMIT;")
    assert f.query("SELECT count(*) FROM skus") == [(6,)]


def test_retry_on_locked_schedule_and_idempotency(monkeypatch):
    slept = []
    monkeypatch.setattr(litebroker.time, "sleep", slept.append)
    calls = []

    @litebroker.retry_on_locked(max_attempts=5)
    def always_locked():
        calls.append(1)
        raise litebroker.DatabaseLockedError(litebroker.LOCKED_USER_TEXT)

    with pytest.raises(sqlite3.OperationalError) as e:
        always_locked()
    assert slept == [0.5, 1.0, 2.0, 4.0, 5.0] and len(calls) == 6 and e.value.attempts == 6

    slept.clear()

    @litebroker.retry_on_locked()
    def stdlib_locked_then_ok(n=[0]):
        n[0] += 1
        if n[0] < 3:
            raise sqlite3.OperationalError("database is locked")
        return n[0]

    assert stdlib_locked_then_ok() == 3 and slept == [0.5, 1.0]

    slept.clear()

    @litebroker.retry_on_locked()
    def other_error():
        raise sqlite3.OperationalError("no such table: x")

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        other_error()
    assert slept == []

    # An attempt that committed a write before the lock is not retried by default
    # (a retry would apply that write twice); with idempotent_only=False it is.
    def committed_then_locked():
        litebroker._count_commit()
        raise litebroker.DatabaseLockedError(litebroker.LOCKED_USER_TEXT)

    with pytest.raises(litebroker.DatabaseLockedError) as e:
        litebroker.retry_on_locked()(committed_then_locked)()
    assert slept == [] and e.value.not_retried
    with pytest.raises(litebroker.DatabaseLockedError):
        litebroker.retry_on_locked(max_attempts=2, idempotent_only=False)(committed_then_locked)()
    assert slept == [0.5, 1.0]


def _proc_writes(factory: ConnectionFactory, proc: int) -> int:
    """One process's 200 writes: 10 writer blocks of 20 rows through executemany,
    the last row of each block through execute."""
    for block in range(10):
        rows = [(f"p{proc}-{block}-{i}", proc) for i in range(20)]
        with factory.writer() as conn:
            conn.executemany("INSERT INTO skus (sku, qty) VALUES (?, ?)", rows[:19])
            conn.execute("INSERT INTO skus (sku, qty) VALUES (?, ?)", rows[19])
            conn.commit()
    return proc


def test_eight_processes_two_hundred_writes_each(broker):
    factory = ConnectionFactory(broker.db, client_name="mp-test")
    factory.query("SELECT 1")  # the parent uses it first: children must open their own
    with factory.writer() as conn:
        conn.execute("SELECT 1")
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with ctx.Pool(8) as pool:
        done = pool.starmap(_proc_writes, [(factory, p) for p in range(8)])
    assert sorted(done) == list(range(8))
    assert factory.query("SELECT count(*), count(DISTINCT sku) FROM skus") == [(1600, 1600)]
    assert factory.query("SELECT qty, count(*) FROM skus GROUP BY qty") == [(p, 200) for p in range(8)]
    # The parent's own connections still work after the children used theirs.
    with factory.writer() as conn:
        conn.execute("INSERT INTO skus (sku) VALUES ('parent')")


def test_threads_share_one_factory(broker):
    f = ConnectionFactory(broker.db)
    errors = []

    def work(t):
        try:
            for i in range(25):
                f.execute("INSERT INTO skus (sku, qty) VALUES (?, ?)", (f"t{t}-{i}", t))
                with f.reader() as r:
                    r.execute("SELECT count(*) FROM skus").fetchone()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert f.query("SELECT count(*) FROM skus") == [(200,)]


def test_readers_work_without_a_broker(broker):
    f = ConnectionFactory(broker.db)
    f.execute("INSERT INTO skus (sku) VALUES ('before')")
    broker.stop()
    with f.reader() as conn:
        assert conn.execute("SELECT sku FROM skus").fetchall() == [("before",)]
    with pytest.raises(litebroker.BrokerUnavailableError) as e:
        with f.writer() as conn:
            conn.execute("INSERT INTO skus (sku) VALUES ('after')")
    assert isinstance(e.value, sqlite3.OperationalError)
    with pytest.raises(sqlite3.OperationalError):
        f.execute("INSERT INTO skus (sku) VALUES ('after')")
    conn = litebroker.open_connection(broker.db)
    assert conn.execute("SELECT count(*) FROM skus").fetchone() == (1,)
    fresh = ConnectionFactory(broker.db)  # a new process's first look, no broker
    assert fresh.query("SELECT sku FROM skus") == [("before",)]


def test_admin_calls(broker):
    f = ConnectionFactory(broker.db)
    f.execute("INSERT INTO skus (sku) VALUES ('A')")
    assert f.status()["pid"] == broker.proc.pid
    assert f.stats()["row_counts"]
    assert f.verify()["integrity_problems"] == []
    b = f.backup("pytest")
    assert "pytest" in str(b)
    assert isinstance(f.checkpoint("passive"), dict)
    assert any(c for c in f.connections())



def test_watch_delivers_what_another_process_commits_in_order_and_resumes_by_cursor(broker):
    f = ConnectionFactory(broker.db)
    w = f.watch("skus")
    start = w.subscribe()
    assert "-" in start
    # Another process (the CLI) commits; a write to another table is filtered out.
    subprocess.run([broker.cli, "--db", str(broker.db), "exec", "CREATE TABLE other (x)"], check=True)
    subprocess.run(
        [broker.cli, "--db", str(broker.db), "exec", "INSERT INTO skus (sku) VALUES ('W1'), ('W2')"], check=True
    )
    f.execute("UPDATE skus SET qty = 3 WHERE sku = 'W1'")
    first = w.next(timeout=20)
    assert first is not None and not first.is_resync
    assert first.tables["skus"].inserted == 2 and first.tables["skus"].rowids_capped is False
    assert set(first.tables) == {"skus"}
    second = next(iter(w))
    assert second.tables["skus"].updated == 1
    assert w.cursor == second.cursor
    assert w.next(timeout=0.2) is None
    # A new watch resuming after the first event gets exactly the second again.
    again = f.watch(["skus"], since=first.cursor).next(timeout=20)
    assert again is not None and again.cursor == second.cursor
    with pytest.raises(ValueError):
        f.watch("skus", since="not a cursor")


def test_factory_executemany_streams_one_transaction_exactly_once(broker):
    f = ConnectionFactory(broker.db)
    rows = [(f"BULK{i}", i) for i in range(20_000)]
    cur = f.executemany("INSERT INTO skus (sku, qty) VALUES (?, ?)", rows)
    assert cur.rowcount == 20_000
    with f.reader() as conn:
        assert conn.execute("SELECT count(*), sum(qty) FROM skus WHERE sku LIKE 'BULK%'").fetchone() == (
            20_000,
            sum(range(20_000)),
        )
    # A failing row (a duplicate key at index 3) applies nothing of the call.
    bad = [("NEW0", 0), ("NEW1", 1), ("NEW2", 2), ("BULK5", 3), ("NEW4", 4)]
    with pytest.raises(sqlite3.IntegrityError, match="row 3"):
        f.executemany("INSERT INTO skus (sku, qty) VALUES (?, ?)", bad)
    with f.reader() as conn:
        assert conn.execute("SELECT count(*) FROM skus WHERE sku LIKE 'NEW%'").fetchone() == (0,)
    # open_connection's executemany outside a transaction takes the same path.
    conn = litebroker.open_connection(broker.db)
    cur = conn.executemany("UPDATE skus SET qty = qty + 1 WHERE sku = ?", [("BULK1",), ("BULK2",)])
    assert cur.rowcount == 2
    conn.close()

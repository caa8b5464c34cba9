"""Inventory demo in Python: one desktop-app instance of many sharing data/app.db.

Each instance adds SKUs, records sales (an UPSERT that adds, sent exactly once),
moves stock in write sessions (a movement row and the stock change together)
and reads stock on its own read-only connection. It prints one JSON line: what
it did, so a launcher can check that the database holds exactly that.

    python client/python/examples/inventory_demo.py --db data/app.db --instance 3 --ops 40
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import time

import litebroker
from litebroker import get_connection_factory

SCHEMA = """
CREATE TABLE IF NOT EXISTS skus (sku TEXT PRIMARY KEY, description TEXT, qty INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS moves (id INTEGER PRIMARY KEY, sku TEXT NOT NULL REFERENCES skus(sku), qty INTEGER NOT NULL, instance INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sales (date TEXT NOT NULL, sku TEXT NOT NULL, qty INTEGER NOT NULL, UNIQUE (date, sku));
"""

SKUS = [f"SKU-{i:03}" for i in range(10)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="data/app.db")
    ap.add_argument("--instance", type=int, default=0)
    ap.add_argument("--ops", type=int, default=40)
    ap.add_argument("--autostart", action="store_true")
    a = ap.parse_args()

    factory = get_connection_factory(a.db, client_name=f"inventory-py-{a.instance}", autostart=a.autostart)
    rnd = random.Random(a.instance)
    report = {"instance": a.instance, "sold": 0, "moved": 0, "moves": 0, "reads": 0, "errors": 0}
    factory.executescript(SCHEMA)  # every statement is IF NOT EXISTS: the first instance's wins
    for sku in SKUS:  # an UPSERT that changes nothing when the row exists: idempotent
        factory.execute("INSERT INTO skus (sku, description) VALUES (?, ?) ON CONFLICT DO NOTHING", (sku, "demo"), idempotent=True)

    for _ in range(a.ops):
        sku = rnd.choice(SKUS)
        try:
            op = rnd.random()
            if op < 0.4:
                qty = rnd.randint(1, 3)
                # Adds to the day's total: applied twice it would count twice, so it
                # goes exactly once (a request id), never through a blind retry.
                factory.execute(
                    "INSERT INTO sales (date, sku, qty) VALUES (?, ?, ?) "
                    "ON CONFLICT(date, sku) DO UPDATE SET qty = qty + excluded.qty",
                    ("2026-11-28", sku, qty),
                )
                report["sold"] += qty
            elif op < 0.8:
                qty = rnd.randint(-2, 5)
                with factory.writer(timeout=10) as conn:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute("INSERT INTO moves (sku, qty, instance) VALUES (?, ?, ?)", (sku, qty, a.instance))
                    conn.execute("UPDATE skus SET qty = qty + ? WHERE sku = ?", (qty, sku))
                    conn.commit()
                report["moved"] += qty
                report["moves"] += 1
            else:
                with factory.reader() as conn:
                    conn.row_factory = litebroker.Row
                    row = conn.execute("SELECT sku, qty FROM skus WHERE sku = ?", (sku,)).fetchone()
                    assert row is not None and row["sku"] == sku
                report["reads"] += 1
        except sqlite3.OperationalError as e:
            report["errors"] += 1
            print(f"instance {a.instance}: {type(e).__name__}: {e}", file=sys.stderr)
        time.sleep(rnd.random() * 0.005)

    print(json.dumps(report), flush=True)
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

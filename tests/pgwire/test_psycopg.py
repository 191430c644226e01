"""psycopg 3 against a running viewcast (see run.sh): SUBSCRIBE through cursor.stream (sync and
async), cursors with FETCH, parameters, and cancellation. Prints 'N passed, N failed'."""

import asyncio
import os
import sys
import threading
import time
import traceback

import psycopg

HOST = os.environ.get("VIEWCAST_PG_HOST", "127.0.0.1")
PORT = int(os.environ.get("VIEWCAST_PG_PORT", "6875"))
DSN = f"host={HOST} port={PORT} user=materialize dbname=materialize"


def connect(**kw):
    return psycopg.connect(DSN, autocommit=True, **kw)


def test_select_params_and_errors():
    with connect() as conn:
        conn.execute("CREATE TABLE tp1 (a int, b text)")
        conn.execute("INSERT INTO tp1 VALUES (1, 'x'), (2, 'y')")
        rows = conn.execute("SELECT a, b FROM tp1 WHERE a = %s", (2,)).fetchall()
        assert rows == [(2, "y")], rows
        rows = conn.execute("SELECT b FROM tp1 WHERE b = %s", ("x",)).fetchall()
        assert rows == [("x",)], rows
        try:
            conn.execute("SELECT nope FROM tp1")
            raise AssertionError("expected an error")
        except psycopg.errors.UndefinedColumn as e:
            assert e.diag.sqlstate == "42703"
            assert e.diag.statement_position == "8", e.diag.statement_position


def test_stream_snapshot_changes_cancel():
    with connect() as conn, connect() as writer:
        conn.execute("CREATE TABLE tp2 (a int, b text)")
        conn.execute("INSERT INTO tp2 VALUES (1, 'x')")
        seen = []
        cur = conn.cursor()
        try:
            for row in cur.stream("SUBSCRIBE tp2"):
                seen.append(row)
                if len(seen) == 1:
                    assert row[1:] == (1, 1, "x"), row
                    writer.execute("INSERT INTO tp2 VALUES (2, 'y')")
                elif len(seen) == 2:
                    assert row[1:] == (1, 2, "y"), row
                    assert row[0] >= seen[0][0]
                    threading.Timer(0.1, conn.cancel).start()
            raise AssertionError("stream ended without cancel")
        except psycopg.errors.QueryCanceled:
            pass
        assert len(seen) == 2, seen
        # The connection and server keep working after the cancel.
        assert conn.execute("SELECT count(*) FROM tp2").fetchone() == (2,)


def test_cursor_fetch():
    with psycopg.connect(DSN) as conn, connect() as writer:  # not autocommit: psycopg opens a transaction
        cur = conn.cursor()
        writer.execute("CREATE TABLE tp3 (a int)")
        writer.execute("INSERT INTO tp3 VALUES (1)")
        cur.execute("DECLARE c CURSOR FOR SUBSCRIBE tp3 WITH (PROGRESS)")
        cur.execute("FETCH ALL c")
        first = [r for r in cur.fetchall() if not r[1]]
        assert [r[2:] for r in first] == [(1, 1)], first
        writer.execute("DELETE FROM tp3")
        got = []
        deadline = time.time() + 10
        while not got and time.time() < deadline:
            cur.execute("FETCH 10 c WITH (timeout = '200ms')")
            got = [r for r in cur.fetchall() if not r[1]]
        assert [r[2:] for r in got] == [(-1, 1)], got
        conn.rollback()


async def stream_async():
    async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn, \
            await psycopg.AsyncConnection.connect(DSN, autocommit=True) as writer:
        await conn.execute("CREATE TABLE tp4 (a int, b text)")
        await conn.execute("INSERT INTO tp4 VALUES (1, 'x')")
        cur = conn.cursor()
        seen = []

        async def consume():
            async for row in cur.stream("SUBSCRIBE (SELECT a, b FROM tp4 WHERE a > 0) WITH (PROGRESS)"):
                if row[1]:  # progress row
                    continue
                seen.append(row)
                if len(seen) == 1:
                    await writer.execute("INSERT INTO tp4 VALUES (5, 'q')")
                if len(seen) == 2:
                    return

        await asyncio.wait_for(consume(), 20)
        assert [r[2:] for r in seen] == [(1, 1, "x"), (1, 5, "q")], seen
        conn.cancel()
        try:
            async for _ in cur:
                pass
        except psycopg.Error:
            pass
        cur2 = writer.cursor()
        await cur2.execute("SELECT count(*) FROM tp4")
        assert await cur2.fetchone() == (2,)


def test_async_stream():
    asyncio.run(stream_async())


def main():
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_")]
    passed = failed = 0
    for t in tests:
        try:
            t()
            passed += 1
            print(f"ok   {t.__name__}")
        except Exception:
            failed += 1
            print(f"FAIL {t.__name__}")
            traceback.print_exc()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

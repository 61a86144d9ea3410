"""Weir through Python's Postgres drivers: psycopg 3, psycopg2, asyncpg (with its type
introspection), and SQLAlchemy 2.1 over both psycopg drivers (the inspector, a reflected table's
select(), pandas.read_sql of a view).

Run by tests/e2e.rs with the server's port as the only argument; exits non-zero on the first
failure. Each driver creates its own stream, inserts with parameters, reads a view and checks types.
"""

import asyncio
import datetime
import sys

PORT = int(sys.argv[1])
DSN = f"host=127.0.0.1 port={PORT} user=weir dbname=weir"


def check(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def with_psycopg3():
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(
            "CREATE STREAM p3 (id BIGINT, name TEXT, score DOUBLE PRECISION, ok BOOLEAN, "
            "ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)"
        )
        conn.execute(
            "CREATE MATERIALIZED VIEW p3_by_name AS "
            "SELECT name, COUNT(*) AS n, SUM(score) AS total FROM p3 GROUP BY name"
        )
        t0 = datetime.datetime(2026, 1, 1, 0, 0, 1)
        with conn.cursor() as cur:
            # Typed parameters over the extended protocol, several rows at once.
            cur.executemany(
                "INSERT INTO p3 VALUES (%s, %s, %s, %s, %s)",
                [(i, f"n{i % 3}", i * 1.5, i % 2 == 0, t0 + datetime.timedelta(seconds=i))
                 for i in range(30)],
            )
            cur.execute("SELECT id, name, score, ok, ts FROM p3 WHERE id = %s", (7,))
            row = cur.fetchone()
            check(row, (7, "n1", 10.5, False, t0 + datetime.timedelta(seconds=7)), "psycopg3 row")
            cur.execute("SELECT name, n, total FROM p3_by_name ORDER BY name")
            check(cur.fetchall(), [("n0", 10, 202.5), ("n1", 10, 217.5), ("n2", 10, 232.5)],
                  "psycopg3 view")
            # Binary results.
            cur.execute("SELECT id, score, ts FROM p3 WHERE id = 2", binary=True)
            check(cur.fetchone(), (2, 3.0, t0 + datetime.timedelta(seconds=2)), "psycopg3 binary")
            # COPY from the client.
            with cur.copy("COPY p3 (id, name, score, ok, ts) FROM STDIN") as copy:
                copy.write_row((100, "copied", 1.0, True, t0))
                copy.write_row((101, None, None, None, t0))
            cur.execute("SELECT count(*) FROM p3 WHERE id >= 100")
            check(cur.fetchone(), (2,), "psycopg3 copy")
            # A server-side cursor (DECLARE / FETCH) reading a subscription.
        with conn.transaction():
            conn.execute("DECLARE live CURSOR FOR SUBSCRIBE p3_by_name")
            rows = conn.execute("FETCH ALL live").fetchall()
            # weir_watermark, weir_diff, then the view's columns.
            check(sorted((r[2] or "") for r in rows), ["", "copied", "n0", "n1", "n2"],
                  "psycopg3 subscribe")
            check({r[1] for r in rows}, {1}, "psycopg3 subscribe diffs")
            conn.execute("CLOSE live")
        # Errors carry SQLSTATEs.
        try:
            conn.execute("SELECT * FROM nope")
            raise AssertionError("psycopg3: missing table did not fail")
        except psycopg.errors.UndefinedTable:
            pass
        # A nested transaction is a savepoint, released when the inner block ends.
        with conn.transaction():
            with conn.transaction():
                check(conn.execute("SELECT count(*) FROM p3").fetchone(), (32,), "psycopg3 savepoint")
        # Rolling back to a savepoint is accepted where nothing changed since it, and refused
        # with a reason where an insert would have to be undone.
        with conn.transaction():
            conn.execute("SAVEPOINT a")
            conn.execute("ROLLBACK TO SAVEPOINT a")
            conn.execute("INSERT INTO p3 (id, ts) VALUES (200, %s)", (t0,))
            try:
                conn.execute("ROLLBACK TO SAVEPOINT a")
                raise AssertionError("psycopg3: rolling back an insert did not fail")
            except psycopg.errors.FeatureNotSupported as e:
                check("cannot undo" in str(e), True, f"psycopg3 savepoint refusal: {e}")
            conn.execute("RELEASE SAVEPOINT a")
        check(conn.execute("SELECT count(*) FROM p3 WHERE id = 200").fetchone(), (1,),
              "psycopg3 insert kept")


def with_psycopg2():
    import psycopg2
    import psycopg2.errors

    conn = psycopg2.connect(DSN)  # not autocommit: psycopg2 wraps statements in BEGIN ... COMMIT
    cur = conn.cursor()
    cur.execute("CREATE STREAM p2 (id BIGINT, tag VARCHAR, at TIMESTAMP)")
    conn.commit()
    cur.execute("INSERT INTO p2 VALUES (%s, %s, %s), (%s, %s, %s)",
                (1, "a", datetime.datetime(2026, 1, 1), 2, None, datetime.datetime(2026, 1, 2)))
    conn.commit()
    cur.execute("SELECT id, tag, at FROM p2 ORDER BY id")
    check(cur.fetchall(), [(1, "a", datetime.datetime(2026, 1, 1)),
                           (2, None, datetime.datetime(2026, 1, 2))], "psycopg2 rows")
    conn.commit()
    try:
        cur.execute("INSERT INTO p2 VALUES ('x', 'y', NULL)")
        raise AssertionError("psycopg2: bad value did not fail")
    except psycopg2.errors.InvalidTextRepresentation:
        conn.rollback()
    cur.execute("SELECT count(*) FROM p2")
    check(cur.fetchone(), (2,), "psycopg2 nothing half-applied")
    conn.close()


async def with_asyncpg_async():
    import asyncpg

    conn = await asyncpg.connect(host="127.0.0.1", port=PORT, user="weir", database="weir")
    await conn.execute("CREATE STREAM apg (id BIGINT, v DOUBLE PRECISION, ts TIMESTAMP)")
    t0 = datetime.datetime(2026, 1, 1, 12, 0, 0)
    await conn.executemany("INSERT INTO apg VALUES ($1, $2, $3)",
                           [(i, i / 4, t0 + datetime.timedelta(minutes=i)) for i in range(10)])
    rows = await conn.fetch("SELECT id, v, ts FROM apg WHERE id > $1 ORDER BY id", 7)
    check([tuple(r) for r in rows],
          [(8, 2.0, t0 + datetime.timedelta(minutes=8)), (9, 2.25, t0 + datetime.timedelta(minutes=9))],
          "asyncpg rows")
    check(await conn.fetchval("SELECT count(*) FROM apg"), 10, "asyncpg count")
    # A codec of one's own makes asyncpg introspect the type in pg_catalog (pg_type and
    # pg_namespace, with its recursive query over element and base types).
    await conn.set_type_codec("float8", schema="pg_catalog", encoder=str,
                              decoder=lambda text: "f:" + text, format="text")
    check(await conn.fetchval("SELECT v FROM apg WHERE id = 2"), "f:0.5", "asyncpg own codec")
    # Result types as asyncpg describes them from the statement's row description.
    stmt = await conn.prepare("SELECT id, count(*), max(ts) FROM apg GROUP BY id")
    check([(a.name, a.type.name) for a in stmt.get_attributes()],
          [("id", "int8"), ("count", "int8"), ("max", "timestamp")], "asyncpg attributes")
    await conn.close()


def with_asyncpg():
    asyncio.run(with_asyncpg_async())


def with_sqlalchemy():
    for driver in ("psycopg2", "psycopg"):
        sqlalchemy_with(driver)


def sqlalchemy_with(driver):
    """SQLAlchemy 2.1 over `driver`: the inspector, a reflected table's select() and pandas."""
    import pandas
    import sqlalchemy

    engine = sqlalchemy.create_engine(f"postgresql+{driver}://weir@127.0.0.1:{PORT}/weir")
    inspector = sqlalchemy.inspect(engine)
    check("public" in inspector.get_schema_names(), True, "sqlalchemy schemas")
    tables = inspector.get_table_names()
    for t in ("p3", "p2", "apg"):
        check(t in tables, True, f"sqlalchemy table {t} in {tables}")
    views = inspector.get_view_names() + inspector.get_materialized_view_names()
    check("p3_by_name" in views, True, f"sqlalchemy view in {views}")
    # What Superset reads to list a table's columns, with their types.
    columns = inspector.get_columns("p3")
    check([c["name"] for c in columns], ["id", "name", "score", "ok", "ts"], "sqlalchemy columns")
    check(
        [str(c["type"]) for c in columns],
        ["BIGINT", "TEXT", "DOUBLE PRECISION", "BOOLEAN", "TIMESTAMP"],
        "sqlalchemy column types",
    )
    check(all(c["default"] is None for c in columns), True, "sqlalchemy column defaults")
    view_columns = [c["name"] for c in inspector.get_columns("p3_by_name")]
    check(view_columns, ["name", "n", "total"], "sqlalchemy view columns")
    p3 = sqlalchemy.Table("p3", sqlalchemy.MetaData(), autoload_with=engine)
    query = sqlalchemy.select(p3.c.id, p3.c.name).where(p3.c.id < 2).order_by(p3.c.id)
    with engine.connect() as conn:
        check([tuple(r) for r in conn.execute(query)], [(0, "n0"), (1, "n1")],
              f"sqlalchemy {driver} select()")
        frame = pandas.read_sql("SELECT * FROM p3_by_name ORDER BY name", conn)
    check(list(frame.columns), ["name", "n", "total"], f"pandas {driver} columns")
    check(frame["name"].tolist()[:3], ["copied", "n0", "n1"], f"pandas {driver} rows")
    frame = pandas.read_sql(sqlalchemy.select(sqlalchemy.func.count()).select_from(p3), engine)
    check(int(frame.iloc[0, 0]), 33, f"pandas {driver} count")
    engine.dispose()


for test in (with_psycopg3, with_psycopg2, with_asyncpg, with_sqlalchemy):
    test()
    print(f"ok {test.__name__}", flush=True)

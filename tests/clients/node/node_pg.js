// Weir through node-postgres (npm pg): parameterised inserts and queries, types, errors, a
// subscription read through a cursor. Run by tests/e2e.rs with the server's port.
const { Client } = require("pg");

function check(got, want, what) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) throw new Error(`${what}: got ${g}, want ${w}`);
}

async function main() {
  const client = new Client({ host: "127.0.0.1", port: Number(process.argv[2]), user: "weir", database: "weir" });
  await client.connect();
  await client.query(
    "CREATE STREAM js (id BIGINT, name TEXT, ok BOOLEAN, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)"
  );
  await client.query("CREATE MATERIALIZED VIEW js_count AS SELECT ok, COUNT(*) AS n FROM js GROUP BY ok");
  for (let i = 0; i < 10; i++) {
    await client.query("INSERT INTO js VALUES ($1, $2, $3, $4)", [i, `n${i}`, i % 2 === 0, `2026-01-01 00:00:0${i}`]);
  }
  const r = await client.query("SELECT id, name, ok FROM js WHERE id = $1", [3]);
  check(r.rows, [{ id: "3", name: "n3", ok: false }], "select with a parameter");
  const v = await client.query("SELECT ok, n FROM js_count ORDER BY ok");
  check(v.rows, [{ ok: false, n: "5" }, { ok: true, n: "5" }], "view");
  try {
    await client.query("SELECT * FROM nope");
    throw new Error("missing table did not fail");
  } catch (e) {
    check(e.code, "42P01", "SQLSTATE");
  }
  await client.query("BEGIN");
  await client.query("DECLARE c CURSOR FOR SUBSCRIBE js_count");
  const f = await client.query("FETCH ALL c");
  check(f.rows.length, 2, "subscription rows");
  await client.query("CLOSE c");
  await client.query("COMMIT");
  await client.end();
  console.log("ok node-postgres");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

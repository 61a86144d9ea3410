// Weir through pgjdbc (Debian's libpostgresql-jdbc-java): prepared statements, types, metadata
// (DatabaseMetaData.getTables / getColumns), errors. Run by tests/e2e.rs with the server's port.
import java.sql.*;
import java.util.*;

public class WeirJdbc {
    static void check(Object got, Object want, String what) {
        if (!Objects.equals(got, want)) {
            throw new AssertionError(what + ": got " + got + ", want " + want);
        }
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/weir";
        try (Connection c = DriverManager.getConnection(url, "weir", "")) {
            try (Statement s = c.createStatement()) {
                s.execute("CREATE STREAM jdbc_events (id BIGINT, name TEXT, price DOUBLE PRECISION, ts TIMESTAMP, "
                        + "WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)");
                s.execute("CREATE MATERIALIZED VIEW jdbc_totals AS SELECT name, SUM(price) AS total FROM jdbc_events GROUP BY name");
            }
            try (PreparedStatement p = c.prepareStatement("INSERT INTO jdbc_events VALUES (?, ?, ?, ?)")) {
                for (int i = 0; i < 6; i++) {
                    p.setLong(1, i);
                    p.setString(2, "n" + (i % 2));
                    p.setDouble(3, i * 2.5);
                    p.setTimestamp(4, Timestamp.valueOf("2026-01-01 00:00:0" + i));
                    check(p.executeUpdate(), 1, "insert count");
                }
            }
            try (PreparedStatement p = c.prepareStatement("SELECT id, name, price, ts FROM jdbc_events WHERE id = ?")) {
                p.setLong(1, 3);
                try (ResultSet r = p.executeQuery()) {
                    check(r.next(), true, "a row");
                    check(r.getLong(1), 3L, "id");
                    check(r.getString(2), "n1", "name");
                    check(r.getDouble(3), 7.5, "price");
                    check(r.getTimestamp(4), Timestamp.valueOf("2026-01-01 00:00:03"), "ts");
                }
            }
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT name, total FROM jdbc_totals ORDER BY name")) {
                r.next();
                check(r.getString(1) + "=" + r.getDouble(2), "n0=15.0", "view row 1");
                r.next();
                check(r.getString(1) + "=" + r.getDouble(2), "n1=22.5", "view row 2");
            }
            // Result columns as JDBC describes them: PostgreSQL's names and types.
            try (Statement s = c.createStatement();
                 ResultSet r = s.executeQuery("SELECT count(*), upper(name), max(price), min(ts), id + 1 FROM jdbc_events GROUP BY id, name")) {
                ResultSetMetaData rm = r.getMetaData();
                List<String> described = new ArrayList<>();
                for (int i = 1; i <= rm.getColumnCount(); i++) {
                    described.add(rm.getColumnName(i) + ":" + rm.getColumnTypeName(i) + ":" + rm.getColumnType(i));
                }
                check(described, List.of("count:int8:" + Types.BIGINT, "upper:text:" + Types.VARCHAR,
                        "max:float8:" + Types.DOUBLE, "min:timestamp:" + Types.TIMESTAMP,
                        "?column?:int8:" + Types.BIGINT), "ResultSetMetaData");
            }
            DatabaseMetaData md = c.getMetaData();
            List<String> tables = new ArrayList<>();
            try (ResultSet r = md.getTables(null, "public", "%", null)) {
                while (r.next()) tables.add(r.getString("TABLE_NAME") + ":" + r.getString("TABLE_TYPE"));
            }
            Collections.sort(tables);
            check(tables.contains("jdbc_events:TABLE"), true, "getTables lists the stream: " + tables);
            check(tables.stream().anyMatch(t -> t.startsWith("jdbc_totals:")), true, "getTables lists the view: " + tables);
            List<String> columns = new ArrayList<>();
            try (ResultSet r = md.getColumns(null, "public", "jdbc_events", "%")) {
                while (r.next()) columns.add(r.getString("COLUMN_NAME") + ":" + r.getString("TYPE_NAME"));
            }
            check(columns, List.of("id:int8", "name:text", "price:float8", "ts:timestamp"), "getColumns");
            try (Statement s = c.createStatement()) {
                s.executeQuery("SELECT * FROM nope");
                throw new AssertionError("missing table did not fail");
            } catch (SQLException e) {
                check(e.getSQLState(), "42P01", "SQLSTATE");
            }
        }
        System.out.println("ok pgjdbc");
    }
}

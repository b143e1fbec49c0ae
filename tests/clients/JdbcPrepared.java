import java.math.BigDecimal;
import java.sql.*;

/** PgJDBC prepared statements against the governed wire endpoint: typed parameters (string, long, decimal,
 *  date, timestamp, boolean, null, an array for = ANY), server-side prepared after the 5th run, and a fetch
 *  size (a portal read in parts). Prints one line per check; the test compares them with its own oracle.
 *  Usage: java -cp postgresql.jar JdbcPrepared.java URL USER PASSWORD */
public class JdbcPrepared {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0], args[1], args[2])) {
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT count(*) FROM shared.events WHERE day >= ? AND n > ? AND flag = ?")) {
                for (int i = 0; i < 7; i++) {  // from the 5th run PgJDBC uses a named server-side statement
                    ps.setDate(1, Date.valueOf("2022-01-01"));
                    ps.setLong(2, i);
                    ps.setBoolean(3, true);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        System.out.println("count " + i + " " + rs.getLong(1));
                    }
                }
            }
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT code, amount, seen_at FROM shared.events WHERE amount > ? AND seen_at < ? AND title IS DISTINCT FROM ? ORDER BY code")) {
                ps.setBigDecimal(1, new BigDecimal("100.50"));
                ps.setTimestamp(2, Timestamp.valueOf("2021-06-01 00:00:00"));
                ps.setNull(3, Types.VARCHAR);
                try (ResultSet rs = ps.executeQuery()) {
                    int n = 0;
                    while (rs.next()) n++;
                    System.out.println("filtered " + n);
                }
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT code FROM shared.events WHERE code = ANY(?) ORDER BY code")) {
                ps.setArray(1, c.createArrayOf("varchar", new Object[]{"E0001", "E0003"}));
                try (ResultSet rs = ps.executeQuery()) {
                    StringBuilder got = new StringBuilder("any");
                    while (rs.next()) got.append(' ').append(rs.getString(1));
                    System.out.println(got);
                }
            }
            c.setAutoCommit(false);  // a fetch size takes effect in a transaction: the portal is read in parts
            try (PreparedStatement ps = c.prepareStatement("SELECT code FROM shared.events ORDER BY code")) {
                ps.setFetchSize(7);
                try (ResultSet rs = ps.executeQuery()) {
                    int n = 0;
                    while (rs.next()) n++;
                    System.out.println("fetched " + n);
                }
            }
            c.commit();
        }
    }
}

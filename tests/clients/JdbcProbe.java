// PgJDBC, the driver DBeaver uses: the metadata calls DBeaver makes on connect, then a prepared query.
// Run by tests/test_endpoints_live.py with: java -cp postgresql.jar JdbcProbe.java URL USER PASSWORD TABLE
import java.sql.*;
public class JdbcProbe {
  public static void main(String[] a) throws Exception {
    try (Connection c = DriverManager.getConnection(a[0], a[1], a[2])) {
      DatabaseMetaData md = c.getMetaData();
      System.out.println("product " + md.getDatabaseProductName() + " " + md.getDatabaseProductVersion());
      try (ResultSet rs = md.getSchemas()) { while (rs.next()) System.out.println("schema " + rs.getString(1)); }
      try (ResultSet rs = md.getTables(null, "shared", "%", new String[]{"TABLE"})) { while (rs.next()) System.out.println("table " + rs.getString("TABLE_NAME")); }
      try (ResultSet rs = md.getColumns(null, "shared", a[3], "%")) { while (rs.next()) System.out.println("column " + rs.getString("COLUMN_NAME") + " " + rs.getString("TYPE_NAME")); }
      try (ResultSet rs = md.getPrimaryKeys(null, "shared", a[3])) { while (rs.next()) System.out.println("pk " + rs.getString("COLUMN_NAME")); }
      try (PreparedStatement ps = c.prepareStatement("SELECT * FROM shared." + a[3] + " LIMIT ?")) {
        ps.setInt(1, 2);
        try (ResultSet rs = ps.executeQuery()) { ResultSetMetaData m = rs.getMetaData(); int n = 0; while (rs.next()) n++; System.out.println("rows " + n + " cols " + m.getColumnCount()); }
      }
    }
  }
}

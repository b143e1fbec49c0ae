// PgJDBC, the driver DBeaver uses: the DatabaseMetaData calls DBeaver makes on connect and when a table is
// opened, then a prepared query. Each answer is printed as "<call> <value> <value> ..." (tab-separated), one
// row a line, so that a test can check every name the catalog answered.
// Run by the slow tests with: java -cp postgresql.jar JdbcProbe.java URL USER PASSWORD TABLE
import java.sql.*;
import java.util.ArrayList;
import java.util.List;

public class JdbcProbe {
  interface Call { ResultSet run() throws SQLException; }

  // a failing call is printed as "error <call> <message>" and the probe goes on: one run shows every gap
  static void print(String call, Call query, String... columns) {
    try (ResultSet rs = query.run()) {
      while (rs.next()) {
        List<String> cells = new ArrayList<>();
        cells.add(call);
        for (String c : columns) cells.add(String.valueOf(rs.getString(c)));
        System.out.println(String.join("\t", cells));
      }
    } catch (SQLException e) {
      System.out.println("error\t" + call + "\t" + e.getMessage().replace('\n', ' '));
    }
  }

  interface Value { String get() throws SQLException; }

  static void say(String call, Value value) {
    try {
      System.out.println(call + "\t" + value.get());
    } catch (SQLException e) {
      System.out.println("error\t" + call + "\t" + e.getMessage().replace('\n', ' '));
    }
  }

  public static void main(String[] a) throws Exception {
    try (Connection c = DriverManager.getConnection(a[0], a[1], a[2])) {
      DatabaseMetaData md = c.getMetaData();
      String t = a[3];
      System.out.println("product\t" + md.getDatabaseProductName() + "\t" + md.getDatabaseProductVersion());
      System.out.println("user\t" + md.getUserName());
      print("catalog", () -> c.createStatement().executeQuery("SELECT current_database() AS c"), "c");
      say("catalog_now", c::getCatalog);
      say("schema_now", c::getSchema);
      print("catalogs", () -> md.getCatalogs(), "TABLE_CAT");
      print("schema", () -> md.getSchemas(), "TABLE_SCHEM", "TABLE_CATALOG");
      print("table_types", () -> md.getTableTypes(), "TABLE_TYPE");
      print("table", () -> md.getTables(null, "shared", "%", new String[]{"TABLE"}), "TABLE_SCHEM", "TABLE_NAME",
            "TABLE_TYPE", "REMARKS");
      print("any_table", () -> md.getTables(null, null, "%", null), "TABLE_SCHEM", "TABLE_NAME", "TABLE_TYPE");
      print("column", () -> md.getColumns(null, "shared", t, "%"), "COLUMN_NAME", "TYPE_NAME", "DATA_TYPE",
            "ORDINAL_POSITION", "REMARKS");
      print("all_columns", () -> md.getColumns(null, null, "%", "%"), "TABLE_NAME", "COLUMN_NAME");
      print("pk", () -> md.getPrimaryKeys(null, "shared", t), "COLUMN_NAME");
      print("fk", () -> md.getImportedKeys(null, "shared", t), "PKTABLE_NAME", "FKCOLUMN_NAME");
      print("exported", () -> md.getExportedKeys(null, "shared", t), "FKTABLE_NAME", "FKCOLUMN_NAME");
      print("index", () -> md.getIndexInfo(null, "shared", t, false, true), "INDEX_NAME", "COLUMN_NAME");
      print("type", () -> md.getTypeInfo(), "TYPE_NAME", "DATA_TYPE");
      print("function", () -> md.getFunctions(null, null, "%"), "FUNCTION_SCHEM", "FUNCTION_NAME");
      print("procedure", () -> md.getProcedures(null, null, "%"), "PROCEDURE_SCHEM", "PROCEDURE_NAME");
      print("privilege", () -> md.getTablePrivileges(null, "shared", t), "TABLE_NAME", "GRANTEE", "PRIVILEGE");
      print("best_row", () -> md.getBestRowIdentifier(null, "shared", t, DatabaseMetaData.bestRowSession, true),
            "COLUMN_NAME");
      try (Statement s = c.createStatement();
           ResultSet rs = s.executeQuery("SELECT current_user, current_database(), current_schema(), version()")) {
        rs.next();
        System.out.println("session\t" + rs.getString(1) + "\t" + rs.getString(2) + "\t" + rs.getString(3) + "\t"
                           + rs.getString(4));
      }
      try (PreparedStatement ps = c.prepareStatement("SELECT * FROM shared." + t + " LIMIT ?")) {
        ps.setInt(1, 2);
        try (ResultSet rs = ps.executeQuery()) {
          ResultSetMetaData m = rs.getMetaData();
          int n = 0;
          while (rs.next()) n++;
          System.out.println("rows\t" + n + "\t" + m.getColumnCount());
        }
      }
    }
  }
}

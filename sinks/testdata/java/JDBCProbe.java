// JDBCProbe connects with pgjdbc to the URL in args[0] and prints the result of args[1].
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.Statement;

public class JDBCProbe {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0]);
             Statement st = c.createStatement();
             ResultSet rs = st.executeQuery(args[1])) {
            rs.next();
            System.out.println(rs.getString(1));
        }
    }
}

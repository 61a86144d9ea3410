// Formats "timestamp<TAB>pattern" lines from stdin with java.time.format.DateTimeFormatter
// (Locale.US), one result per line: the reference for Flink's DATE_FORMAT patterns.
import java.time.LocalDateTime;
import java.time.format.DateTimeFormatter;
import java.util.Locale;
public class DateFormat {
    public static void main(String[] a) throws Exception {
        java.io.BufferedReader r = new java.io.BufferedReader(new java.io.InputStreamReader(System.in));
        String line;
        while ((line = r.readLine()) != null) {
            String[] p = line.split("\t", 2);
            LocalDateTime t = LocalDateTime.parse(p[0].replace(' ', 'T'));
            try { System.out.println(DateTimeFormatter.ofPattern(p[1], Locale.US).format(t)); }
            catch (Exception e) { System.out.println("ERROR: " + e.getClass().getSimpleName()); }
        }
    }
}

// Prints Kafka's error codes (org.apache.kafka.common.protocol.Errors) as tab-separated
// lines: code, name, retriable (true/false), default message. Read by tools/gen_error_codes.py.
import org.apache.kafka.common.errors.RetriableException;
import org.apache.kafka.common.protocol.Errors;

public class DumpErrors {
    public static void main(String[] args) {
        for (Errors e : Errors.values()) {
            Throwable ex = e.exception();
            String message = ex == null || ex.getMessage() == null ? "" : ex.getMessage();
            boolean retriable = ex instanceof RetriableException;
            System.out.println(e.code() + "\t" + e.name() + "\t" + retriable + "\t"
                + message.replace('\t', ' ').replace('\n', ' '));
        }
    }
}

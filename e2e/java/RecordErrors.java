// Produces one batch of three records to partition 0 of a topic with the Java client and
// prints what became of each record, one line each: "<index> ok <offset>" or
// "<index> <exception class>: <message>". e2e/local/test_record_errors.py runs it with
// `java -cp 'e2e/java/lib/*' e2e/java/RecordErrors.java <bootstrap> <topic> <keys>`, where
// <keys> is a comma-separated list of keys ("-" for a record without a key).
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.StringSerializer;

public class RecordErrors {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        // One batch: every record waits for the others.
        props.put("linger.ms", "500");
        props.put("request.timeout.ms", "10000");
        props.put("delivery.timeout.ms", "20000");
        props.put("key.serializer", StringSerializer.class.getName());
        props.put("value.serializer", StringSerializer.class.getName());
        String[] keys = args[2].split(",");
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            for (int i = 0; i < keys.length; i++) {
                String key = keys[i].equals("-") ? null : keys[i];
                sent.add(producer.send(new ProducerRecord<>(args[1], 0, key, "value " + i)));
            }
            producer.flush();
            for (int i = 0; i < sent.size(); i++) {
                try {
                    System.out.println(i + " ok " + sent.get(i).get().offset());
                } catch (ExecutionException e) {
                    Throwable cause = e.getCause();
                    System.out.println(i + " " + cause.getClass().getSimpleName() + ": " + cause.getMessage());
                }
            }
        }
    }
}

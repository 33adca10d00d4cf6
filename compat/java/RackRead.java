// The Java client (kafka-clients 4.4) reading partition 0 of TOPIC from offset 0 with
// client.rack = RACK (KIP-392: the leader may send it to a replica in its rack), until COUNT
// records or 60 s. Prints the values read, in order, as a JSON list on stdout.
//
// Run: java -cp "$(compat/reference/kafka.sh classpath)" compat/java/RackRead.java \
//          BOOTSTRAP TOPIC RACK COUNT

import com.fasterxml.jackson.databind.ObjectMapper;
import java.time.Duration;
import java.util.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

public class RackRead {
    public static void main(String[] args) throws Exception {
        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        c.put(ConsumerConfig.CLIENT_RACK_CONFIG, args[2]);
        c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        int count = Integer.parseInt(args[3]);
        List<String> values = new ArrayList<>();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            TopicPartition tp = new TopicPartition(args[1], 0);
            consumer.assign(List.of(tp));
            consumer.seek(tp, 0);
            long deadline = System.currentTimeMillis() + 60_000;
            while (values.size() < count && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    values.add(r.value());
                }
            }
        }
        System.out.println(new ObjectMapper().writeValueAsString(values));
        System.exit(0);
    }
}

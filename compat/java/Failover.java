// The Java client (kafka-clients 4.4) through a leader change: an idempotent acks=all producer
// sends COUNT records to partition 0 of TOPIC, paced over about PACE_MS each, while a consumer
// reads the partition by assignment from offset 0; the test kills the leader's broker
// meanwhile. Both use the clients' defaults for retries. Prints, as JSON on stdout, every
// acknowledgement (value -> offset), every send error and every polled record (offset, value),
// once the consumer has read every acknowledged record or READ_TIMEOUT_S passed. Progress
// ("acked N") goes to stderr.
//
// Run: java -cp "$(compat/reference/kafka.sh classpath)" compat/java/Failover.java \
//          BOOTSTRAP TOPIC COUNT PACE_MS READ_TIMEOUT_S

import com.fasterxml.jackson.databind.ObjectMapper;
import java.time.Duration;
import java.util.*;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class Failover {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = args[1];
        int count = Integer.parseInt(args[2]);
        long pace = Long.parseLong(args[3]);
        long readTimeout = Long.parseLong(args[4]) * 1000;

        Map<String, Long> acked = new ConcurrentHashMap<>();
        List<String> errors = Collections.synchronizedList(new ArrayList<>());
        List<List<Object>> polled = Collections.synchronizedList(new ArrayList<>());
        AtomicBoolean producing = new AtomicBoolean(true);

        Thread reader = new Thread(() -> {
            Properties c = new Properties();
            c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
            c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
            c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
            try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
                TopicPartition tp = new TopicPartition(topic, 0);
                consumer.assign(List.of(tp));
                consumer.seek(tp, 0);
                Set<String> seen = new HashSet<>();
                long deadline = Long.MAX_VALUE;
                while (System.currentTimeMillis() < deadline) {
                    for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                        polled.add(List.of(r.offset(), r.value()));
                        seen.add(r.value());
                    }
                    if (!producing.get()) {
                        if (deadline == Long.MAX_VALUE) {
                            deadline = System.currentTimeMillis() + readTimeout;
                        }
                        if (seen.containsAll(acked.keySet())) {
                            break;
                        }
                    }
                }
            }
        });
        reader.start();

        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            for (int i = 0; i < count; i++) {
                String value = "j" + i;
                producer.send(new ProducerRecord<>(topic, 0, value, value), (md, e) -> {
                    if (e == null) {
                        acked.put(value, md.offset());
                        if (acked.size() % 100 == 0) {
                            System.err.println("acked " + acked.size());
                        }
                    } else {
                        errors.add(value + ": " + e);
                    }
                });
                Thread.sleep(pace);
            }
            producer.flush();
        }
        producing.set(false);
        reader.join();

        Map<String, Object> out = new LinkedHashMap<>();
        out.put("acked", new TreeMap<>(acked));
        out.put("errors", errors);
        synchronized (polled) {
            out.put("polled", new ArrayList<>(polled));
        }
        System.out.println(new ObjectMapper().writeValueAsString(out));
        System.exit(0);
    }
}

import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.locks.LockSupport;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * End-to-end latency the way the OpenMessaging Benchmark measures it with its Kafka driver:
 * the Java client, a producer sending keyed records at a fixed rate (acks=all), a consumer of
 * every partition of the (new) topic, each record timed from its send to its arrival. Prints
 * the percentiles in milliseconds and the rate the producer achieved as one JSON object.
 *
 * <p>Usage: Latency BOOTSTRAP TOPIC PARTITIONS RATE SECONDS SIZE LINGER_MS
 */
public class Latency {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = args[1];
        int partitions = Integer.parseInt(args[2]);
        long rate = Long.parseLong(args[3]);
        long seconds = Long.parseLong(args[4]);
        int size = Math.max(8, Integer.parseInt(args[5]));
        String linger = args[6];
        int total = (int) (rate * seconds);

        Properties cp = new Properties();
        cp.put("bootstrap.servers", bootstrap);
        cp.put("group.id", "latency");
        cp.put("enable.auto.commit", "false");
        cp.put("fetch.max.wait.ms", "100");
        cp.put("max.poll.records", "10000");
        cp.put("key.deserializer", ByteArrayDeserializer.class.getName());
        cp.put("value.deserializer", ByteArrayDeserializer.class.getName());
        KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cp);
        List<TopicPartition> tps = new ArrayList<>();
        for (int p = 0; p < partitions; p++) {
            tps.add(new TopicPartition(topic, p));
        }
        consumer.assign(tps);
        consumer.seekToBeginning(tps);
        for (TopicPartition tp : tps) {
            consumer.position(tp, Duration.ofSeconds(60));
        }
        consumer.poll(Duration.ofMillis(100));

        long[] latency = new long[total];
        int[] received = {0};
        long deadline = System.nanoTime() + (seconds + 60) * 1_000_000_000L;
        Thread receiver = new Thread(() -> {
            while (received[0] < total && System.nanoTime() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(100))) {
                    long sent = ByteBuffer.wrap(r.value()).getLong();
                    if (received[0] < total) {
                        latency[received[0]++] = System.nanoTime() - sent;
                    }
                }
            }
        });
        receiver.start();

        Properties pp = new Properties();
        pp.put("bootstrap.servers", bootstrap);
        pp.put("acks", "all");
        pp.put("linger.ms", linger);
        pp.put("batch.size", "1048576");
        pp.put("key.serializer", ByteArraySerializer.class.getName());
        pp.put("value.serializer", ByteArraySerializer.class.getName());
        long[] failed = {0};
        double sentPerSecond;
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp)) {
            long start = System.nanoTime();
            for (int i = 0; i < total; i++) {
                long due = start + i * 1_000_000_000L / rate;
                long now;
                while ((now = System.nanoTime()) < due) {
                    LockSupport.parkNanos(due - now);
                }
                byte[] value = new byte[size];
                ByteBuffer.wrap(value).putLong(System.nanoTime());
                byte[] key = Integer.toString(i).getBytes();
                producer.send(new ProducerRecord<>(topic, key, value), (md, e) -> {
                    if (e != null) {
                        synchronized (failed) {
                            failed[0]++;
                        }
                    }
                });
            }
            sentPerSecond = total / ((System.nanoTime() - start) / 1e9);
            producer.flush();
        }
        receiver.join();
        consumer.close();
        if (failed[0] > 0) {
            System.err.println(failed[0] + " records were not delivered");
            System.exit(1);
        }
        if (received[0] < total) {
            System.err.println("received " + received[0] + " of " + total + " records");
            System.exit(1);
        }
        Arrays.sort(latency);
        System.out.printf("{\"p50\": %.3f, \"p99\": %.3f, \"p99.9\": %.3f, \"max\": %.3f, "
                + "\"sent_per_s\": %.1f}%n",
                ms(latency, 50.0), ms(latency, 99.0), ms(latency, 99.9),
                latency[total - 1] / 1e6, sentPerSecond);
    }

    private static double ms(long[] sorted, double percentile) {
        int at = (int) Math.round(percentile / 100.0 * (sorted.length - 1));
        return sorted[at] / 1e6;
    }
}

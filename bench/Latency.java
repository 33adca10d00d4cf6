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
 * every partition of the (new) topic, each record timed from its send to its arrival. As the
 * OpenMessaging Benchmark does, a warm-up at the same rate comes first and is not measured (the
 * JVM compiles its hot paths then, and connections and buffers are set up). Prints the
 * percentiles of the measured records in milliseconds and the rate the producer achieved over
 * them as one JSON object.
 *
 * <p>Also printed: the percentiles of the time from send to acknowledgement (the producer's
 * side alone).
 *
 * <p>Usage: Latency BOOTSTRAP TOPIC PARTITIONS RATE SECONDS SIZE LINGER_MS [WARMUP_SECONDS]
 */
public class Latency {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = args[1];
        int partitions = Integer.parseInt(args[2]);
        long rate = Long.parseLong(args[3]);
        long seconds = Long.parseLong(args[4]);
        int size = Math.max(16, Integer.parseInt(args[5]));
        String linger = args[6];
        long warmup = args.length > 7 ? Long.parseLong(args[7]) : 0;
        int warmupRecords = (int) (rate * warmup);
        int total = (int) (rate * seconds);
        int all = warmupRecords + total;

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

        // Each value starts with its send time and its sequence number: the first warmupRecords
        // are not measured.
        long[] latency = new long[total];
        int[] received = {0};
        int[] measured = {0};
        long deadline = System.nanoTime() + (warmup + seconds + 60) * 1_000_000_000L;
        Thread receiver = new Thread(() -> {
            while (received[0] < all && System.nanoTime() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(100))) {
                    ByteBuffer value = ByteBuffer.wrap(r.value());
                    long sent = value.getLong();
                    long sequence = value.getLong();
                    received[0]++;
                    if (sequence >= warmupRecords && measured[0] < total) {
                        latency[measured[0]++] = System.nanoTime() - sent;
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
        // Every partition's open batch takes batch.size from the producer's buffer: with the
        // default 32 MiB, 100 partitions of 1 MiB batches block send() and cap one producer
        // near 16,000 records/s here, whatever the broker.
        pp.put("buffer.memory", Long.toString((long) Math.max(32, 2 * partitions) << 20));
        pp.put("key.serializer", ByteArraySerializer.class.getName());
        pp.put("value.serializer", ByteArraySerializer.class.getName());
        long[] failed = {0};
        // Each measured record's time from send to acknowledgement (callbacks run on the
        // producer's one I/O thread).
        long[] acked = new long[total];
        double sentPerSecond;
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp)) {
            // The schedule starts again with the measured records: a producer that fell
            // behind during the warm-up does not send them in a catch-up burst.
            long start = System.nanoTime();
            long measuredFrom = start;
            for (int i = 0; i < all; i++) {
                if (i == warmupRecords) {
                    measuredFrom = System.nanoTime();
                }
                long due = i < warmupRecords
                        ? start + i * 1_000_000_000L / rate
                        : measuredFrom + (i - warmupRecords) * 1_000_000_000L / rate;
                long now;
                while ((now = System.nanoTime()) < due) {
                    LockSupport.parkNanos(due - now);
                }
                byte[] value = new byte[size];
                ByteBuffer.wrap(value).putLong(System.nanoTime()).putLong(i);
                byte[] key = Integer.toString(i).getBytes();
                long sentAt = System.nanoTime();
                int measuring = i - warmupRecords;
                producer.send(new ProducerRecord<>(topic, key, value), (md, e) -> {
                    if (e != null) {
                        synchronized (failed) {
                            failed[0]++;
                        }
                    } else if (measuring >= 0) {
                        acked[measuring] = System.nanoTime() - sentAt;
                    }
                });
            }
            sentPerSecond = total / ((System.nanoTime() - measuredFrom) / 1e9);
            producer.flush();
        }
        receiver.join();
        consumer.close();
        if (failed[0] > 0) {
            System.err.println(failed[0] + " records were not delivered");
            System.exit(1);
        }
        if (received[0] < all || measured[0] < total) {
            System.err.println("received " + received[0] + " of " + all + " records");
            System.exit(1);
        }
        Arrays.sort(latency);
        Arrays.sort(acked);
        System.out.printf("{\"p50\": %.3f, \"p99\": %.3f, \"p99.9\": %.3f, \"max\": %.3f, "
                + "\"ack_p50\": %.3f, \"ack_p99\": %.3f, \"sent_per_s\": %.1f}%n",
                ms(latency, 50.0), ms(latency, 99.0), ms(latency, 99.9),
                latency[total - 1] / 1e6, ms(acked, 50.0), ms(acked, 99.0), sentPerSecond);
    }

    private static double ms(long[] sorted, double percentile) {
        int at = (int) Math.round(percentile / 100.0 * (sorted.length - 1));
        return sorted[at] / 1e6;
    }
}

// Kafka Streams 4.4 word count with processing.guarantee=exactly_once_v2, for
// compat/test_streams.py: reads lines from IN, writes (word, count) to OUT with every update
// emitted (no record cache), so a read_committed reader of OUT must see each word's counts run
// 1, 2, 3, ... exactly once, whatever crashes happened.
//
// Run: java -cp "classes:$(compat/reference/kafka.sh classpath)" WordCount APP_ID BOOTSTRAP IN OUT STATE_DIR [REPLICATION_FACTOR]
// (the replication factor of the topics Streams creates; 1 unless given)
// Prints "RUNNING" once the application is running; runs until killed.

import java.util.Arrays;
import java.util.Properties;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Produced;

public class WordCount {
    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, args[0]);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args[1]);
        p.put(StreamsConfig.STATE_DIR_CONFIG, args[4]);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 200);
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, args.length > 5 ? Integer.parseInt(args[5]) : 1);
        p.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        p.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        p.put("consumer.auto.offset.reset", "earliest");
        // A killed instance leaves the group and its open transaction quickly (the test kills one).
        p.put("consumer.session.timeout.ms", 6000);
        p.put("consumer.heartbeat.interval.ms", 1000);
        p.put("producer.transaction.timeout.ms", 10000);

        StreamsBuilder b = new StreamsBuilder();
        b.<String, String>stream(args[2])
                .flatMapValues(line -> Arrays.asList(line.toLowerCase().split("\\s+")))
                .groupBy((key, word) -> word)
                .count()
                .toStream()
                .to(args[3], Produced.with(Serdes.String(), Serdes.Long()));
        KafkaStreams streams = new KafkaStreams(b.build(), p);
        streams.setStateListener((now, before) -> {
            if (now == KafkaStreams.State.RUNNING) {
                System.out.println("RUNNING");
                System.out.flush();
            }
            if (now == KafkaStreams.State.ERROR) {
                System.out.println("ERROR");
                System.out.flush();
            }
        });
        Runtime.getRuntime().addShutdownHook(new Thread(streams::close));
        streams.start();
        Thread.currentThread().join();
    }
}

"""kafka-python: produce, consume and admin against Apache Kafka and against Fjord."""

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from diff import unique


@pytest.mark.compat("kafka-python 3.0", "idempotent produce, consume, headers, every codec")
@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
def test_produce_and_consume(target, codec):
    broker = target
    topic = unique(f"kp-{codec or 'none'}")
    # kafka-python 3 defaults: idempotence on (InitProducerId, sequence numbers).
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all",
                             compression_type=codec, linger_ms=5)
    futures = [producer.send(topic, key=f"k{i % 4}".encode(), value=f"v{i}".encode(),
                             headers=[("n", str(i).encode())]) for i in range(100)]
    producer.flush(30)
    offsets = [f.get(timeout=30).offset for f in futures]
    producer.close()
    assert sorted(offsets) == list(range(100))
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=10_000)
    consumer.assign([TopicPartition(topic, 0)])
    got = []
    for m in consumer:
        got.append(m)
        if len(got) == 100:
            break
    consumer.close()
    assert [m.value for m in got] == [f"v{i}".encode() for i in range(100)]
    assert [m.headers for m in got][:2] == [[("n", b"0")], [("n", b"1")]]


@pytest.mark.compat("kafka-python 3.0", "admin: create, list, describe; metadata, end offsets")
def test_admin_and_metadata(target):
    topic = unique("kp-admin")
    admin = KafkaAdminClient(bootstrap_servers=target.bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1,
                                  topic_configs={"retention.bytes": "1048576"})])
    with pytest.raises(TopicAlreadyExistsError):
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    assert topic in admin.list_topics()
    described = admin.describe_topics([topic])
    assert len(described[0]["partitions"]) == 4
    admin.close()
    consumer = KafkaConsumer(bootstrap_servers=target.bootstrap)
    assert consumer.partitions_for_topic(topic) == {0, 1, 2, 3}
    end = consumer.end_offsets([TopicPartition(topic, 0)])
    assert end[TopicPartition(topic, 0)] == 0
    consumer.close()

"""The reference harness itself: a 3-node Apache Kafka KRaft cluster (what the cluster issues
compare Fjord's cluster against) starts, replicates, survives kill -9 of a node and stops."""

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import wait_for
from reference import KafkaReference


@pytest.mark.compat("reference harness", "3-node Kafka cluster: replication, kill -9 of a node",
                    columns=("kafka",))
def test_three_node_reference_cluster(tmp_path):
    ref = KafkaReference(tmp_path / "kafka3", nodes=3).start()
    try:
        assert len(ref.bootstrap.split(",")) == 3
        a = AdminClient({"bootstrap.servers": ref.bootstrap})
        a.create_topics([NewTopic("replicated", 3, 3, config={"min.insync.replicas": "2"})])[
            "replicated"].result(30)
        assert wait_for(lambda: len(a.list_topics(timeout=10).brokers) == 3, timeout=30)
        md = a.list_topics("replicated", timeout=10).topics["replicated"]
        assert all(len(p.replicas) == 3 for p in md.partitions.values())
        p = Producer({"bootstrap.servers": ref.bootstrap, "acks": "all"})
        for i in range(100):
            p.produce("replicated", value=b"before %d" % i, partition=i % 3)
        assert p.flush(30) == 0
        ref.kill(1)
        # Two of three replicas left: acks=all writes still succeed after leader failover.
        for i in range(100):
            p.produce("replicated", value=b"after %d" % i, partition=i % 3)
        assert p.flush(60) == 0
        c = Consumer({"bootstrap.servers": ref.bootstrap, "group.id": "ref-check",
                      "enable.auto.commit": False})
        c.assign([TopicPartition("replicated", i, 0) for i in range(3)])
        got = []
        wait_for(lambda: got.extend(m for m in c.consume(200, timeout=0.5)
                                    if m.error() is None) or len(got) >= 200, timeout=60, step=0)
        c.close()
        assert len(got) == 200
    finally:
        ref.stop()

"""Admin APIs through each client's admin API: delete, grow, configs, cluster."""

import time

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewPartitions, NewTopic, ResourceType)
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource as KPConfigResource
from kafka.admin import ConfigResourceType, NewPartitions as KPNewPartitions


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def create(a, name, partitions=1, config=None):
    a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                              config=config or {})])[name].result(10)


def topic_configs(a, name):
    res = ConfigResource(ResourceType.TOPIC, name)
    return {k: v for k, v in a.describe_configs([res])[res].result(10).items()}


def test_delete_topic_then_recreate_starts_empty(broker):
    a = admin(broker)
    create(a, "gone", 2)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(10):
        p.produce("gone", value=b"x", partition=i % 2)
    p.flush(10)
    a.delete_topics(["gone"])["gone"].result(10)
    assert "gone" not in a.list_topics(timeout=10).topics
    with pytest.raises(KafkaException) as e:
        a.delete_topics(["gone"])["gone"].result(10)
    assert e.value.args[0].name() == "UNKNOWN_TOPIC_OR_PART"
    create(a, "gone", 1)
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "x"})
    assert c.get_watermark_offsets(TopicPartition("gone", 0), timeout=10) == (0, 0)
    c.close()
    # The deletion survives a restart, and no old data comes back.
    broker.restart()
    assert c is not None
    md = admin(broker).list_topics(timeout=10)
    assert len(md.topics["gone"].partitions) == 1


def test_create_partitions(broker):
    a = admin(broker)
    create(a, "grow", 2)
    a.create_partitions([NewPartitions("grow", 5)], validate_only=True)["grow"].result(10)
    assert len(a.list_topics(timeout=10).topics["grow"].partitions) == 2
    a.create_partitions([NewPartitions("grow", 5)])["grow"].result(10)
    assert len(a.list_topics(timeout=10).topics["grow"].partitions) == 5
    with pytest.raises(KafkaException) as e:
        a.create_partitions([NewPartitions("grow", 3)])["grow"].result(10)
    assert e.value.args[0].name() == "INVALID_PARTITIONS"
    p = Producer({"bootstrap.servers": broker.bootstrap})
    p.produce("grow", value=b"in new partition", partition=4)
    assert p.flush(10) == 0


def test_describe_and_alter_topic_configs(broker):
    a = admin(broker)
    create(a, "cfg", 1, {"retention.ms": "3600000"})
    cfg = topic_configs(a, "cfg")
    assert cfg["retention.ms"].value == "3600000"
    assert cfg["retention.ms"].source == 1  # DYNAMIC_TOPIC_CONFIG
    assert cfg["segment.bytes"].value == str(1 << 30)
    assert cfg["segment.bytes"].is_default
    assert cfg["cleanup.policy"].value == "delete"

    res = ConfigResource(ResourceType.TOPIC, "cfg", set_config={"retention.ms": "1000", "segment.ms": "60000"})
    a.alter_configs([res])[res].result(10)
    cfg = topic_configs(a, "cfg")
    assert cfg["retention.ms"].value == "1000"
    assert cfg["segment.ms"].value == "60000"

    res = ConfigResource(ResourceType.TOPIC, "cfg", incremental_configs=[
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
        ConfigEntry("max.message.bytes", "2000000", incremental_operation=AlterConfigOpType.SET),
    ])
    a.incremental_alter_configs([res])[res].result(10)
    cfg = topic_configs(a, "cfg")
    assert cfg["cleanup.policy"].value == "delete,compact"
    assert cfg["retention.ms"].is_default
    assert cfg["max.message.bytes"].value == "2000000"
    assert cfg["segment.ms"].value == "60000", "incremental changes leave other overrides alone"

    res = ConfigResource(ResourceType.TOPIC, "cfg", incremental_configs=[
        ConfigEntry("retention.ms", "nope", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as e:
        a.incremental_alter_configs([res])[res].result(10)
    assert e.value.args[0].name() == "INVALID_CONFIG"
    # Changes persist across a restart.
    broker.restart()
    cfg = topic_configs(admin(broker), "cfg")
    assert cfg["max.message.bytes"].value == "2000000"


def test_describe_broker_configs_and_cluster(broker):
    a = admin(broker)
    res = ConfigResource(ResourceType.BROKER, "1")
    cfg = a.describe_configs([res])[res].result(10)
    assert cfg["num.partitions"].value == "1"
    # As Kafka: the default retention comes from log.retention.hours; log.retention.ms is null.
    assert cfg["log.retention.ms"].value is None
    assert cfg["log.retention.hours"].value == "168"
    cluster = a.describe_cluster().result(10) if hasattr(a, "describe_cluster") else None
    if cluster is not None:
        assert [n.id for n in cluster.nodes] == [1]
        assert cluster.controller.id == 1
        assert cluster.cluster_id


def test_kafka_python_admin(broker):
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    from kafka.admin import NewTopic as KPNewTopic
    a.create_topics([KPNewTopic("kpa", num_partitions=1, replication_factor=1)])
    a.create_partitions({"kpa": KPNewPartitions(total_count=3)})
    described = a.describe_configs([KPConfigResource(ConfigResourceType.TOPIC, "kpa")])
    assert described, "describe_configs answered"
    a.alter_configs([KPConfigResource(ConfigResourceType.TOPIC, "kpa", configs={"retention.ms": "123456"})])
    cluster = a.describe_cluster()
    assert cluster["controller_id"] == 1
    a.delete_topics(["kpa"])
    deadline = time.monotonic() + 10
    while "kpa" in a.list_topics() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "kpa" not in a.list_topics()
    a.close()


def test_delete_records_moves_the_log_start(broker):
    from confluent_kafka import Consumer, TopicPartition
    a = admin(broker)
    create(a, "trim", 1)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(20):
        p.produce("trim", value=f"v{i}".encode())
    p.flush(10)
    res = a.delete_records([TopicPartition("trim", 0, 7)])
    low = list(res.values())[0].result(10)
    assert low.low_watermark == 7
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "t", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    assert c.get_watermark_offsets(TopicPartition("trim", 0), timeout=10) == (7, 20)
    c.assign([TopicPartition("trim", 0, 0)])  # below the start: reset to earliest
    m = None
    end = time.monotonic() + 10
    while m is None and time.monotonic() < end:
        m = c.poll(0.5)
    assert m.offset() == 7 and m.value() == b"v7"
    c.close()
    with pytest.raises(KafkaException) as e:
        list(a.delete_records([TopicPartition("trim", 0, 25)]).values())[0].result(10)
    assert e.value.args[0].name() == "OFFSET_OUT_OF_RANGE"
    broker.restart()
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "t2"})
    assert c.get_watermark_offsets(TopicPartition("trim", 0), timeout=10) == (7, 20), "durable"
    c.close()


def test_describe_topics_and_log_dirs(broker):
    a = admin(broker)
    create(a, "desc", 3)
    from confluent_kafka import TopicCollection
    described = a.describe_topics(TopicCollection(["desc"]))["desc"].result(10)
    assert [p.id for p in described.partitions] == [0, 1, 2]
    assert all(p.leader.id == 1 for p in described.partitions)
    ka = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    dirs = ka.describe_log_dirs()
    text = repr(dirs)
    assert "desc" in text, text
    ka.close()

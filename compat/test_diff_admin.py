"""Differential: admin requests and the errors Kafka answers them with, Kafka against Fjord."""

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                   ConfigResource, NewPartitions, NewTopic, ResourcePatternType,
                                   ResourceType)

from diff import compare, unique


def outcome(future, timeout=15):
    """What a client sees of one admin result: "ok" or the Kafka error's name."""
    try:
        future.result(timeout)
        return "ok"
    except KafkaException as e:
        return e.args[0].name()


def create_topic_errors(t):
    a = AdminClient({"bootstrap.servers": t.bootstrap})
    name = unique("dup")
    out = {"first": outcome(a.create_topics([NewTopic(name, 2, 1)])[name])}
    out["again"] = outcome(a.create_topics([NewTopic(name, 2, 1)])[name])
    cases = {
        "zero_partitions": NewTopic(unique("z"), 0, 1),
        "rf_too_big": NewTopic(unique("rf"), 1, 3),
        "bad_name": NewTopic("bad/name", 1, 1),
        "dot_name": NewTopic(".", 1, 1),
        "long_name": NewTopic("x" * 250, 1, 1),
        "unknown_config": NewTopic(unique("uc"), 1, 1, config={"no.such.config": "1"}),
        "bad_value": NewTopic(unique("bv"), 1, 1, config={"retention.ms": "soon"}),
        "bad_policy": NewTopic(unique("bp"), 1, 1, config={"cleanup.policy": "keep"}),
        "bad_ts_type": NewTopic(unique("bt"), 1, 1, config={"message.timestamp.type": "Now"}),
        "neg_segment": NewTopic(unique("ns"), 1, 1, config={"segment.bytes": "10"}),
    }
    for case, nt in cases.items():
        out[case] = outcome(a.create_topics([nt])[nt.topic])
    vo = NewTopic(unique("vo"), 3, 1)
    out["validate_only"] = outcome(a.create_topics([vo], validate_only=True)[vo.topic])
    out["validate_only_created"] = vo.topic in a.list_topics(timeout=10).topics
    return out


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "CreateTopics errors and validate-only")
def test_create_topic_errors(both):
    compare(both, create_topic_errors)


def other_admin_errors(t):
    a = AdminClient({"bootstrap.servers": t.bootstrap})
    missing = unique("missing")
    out = {"delete_missing": outcome(a.delete_topics([missing])[missing])}
    out["partitions_missing"] = outcome(a.create_partitions([NewPartitions(missing, 3)])[missing])
    name = unique("grow")
    a.create_topics([NewTopic(name, 2, 1)])[name].result(15)
    out["shrink"] = outcome(a.create_partitions([NewPartitions(name, 1)])[name])
    out["same"] = outcome(a.create_partitions([NewPartitions(name, 2)])[name])
    res = ConfigResource(ResourceType.TOPIC, missing)
    out["describe_missing"] = outcome(a.describe_configs([res])[res])
    return out


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "DeleteTopics, CreatePartitions, DescribeConfigs errors")
def test_other_admin_errors(both):
    compare(both, other_admin_errors)


def assignment_errors(t):
    """Manual replica assignments (CreateTopics, CreatePartitions) as the controller checks them;
    both brokers are node 1."""
    a = AdminClient({"bootstrap.servers": t.bootstrap})
    out = {}
    cases = {
        "placed": [[1], [1]],
        "unknown_broker": [[9]],
        "duplicate_broker": [[1, 1]],
        "uneven": [[1], [1, 1]],
    }
    for case, replicas in cases.items():
        nt = NewTopic(unique("ma"), len(replicas), replica_assignment=replicas)
        out[case] = outcome(a.create_topics([nt])[nt.topic])
    name = unique("mgrow")
    a.create_topics([NewTopic(name, 1, 1)])[name].result(15)
    out["grow_placed"] = outcome(a.create_partitions([NewPartitions(name, 3, [[1], [1]])])[name])
    out["grow_unknown"] = outcome(a.create_partitions([NewPartitions(name, 4, [[7]])])[name])
    out["grow_too_few"] = outcome(a.create_partitions([NewPartitions(name, 6, [[1]])])[name])
    out["grow_rf"] = outcome(a.create_partitions([NewPartitions(name, 4, [[1, 1]])])[name])
    md = a.list_topics(name, timeout=10).topics[name]
    out["partitions"] = sorted(md.partitions)
    out["replicas"] = sorted({tuple(p.replicas) for p in md.partitions.values()})
    return out


@pytest.mark.compat("confluent-kafka 2.16 (librdkafka)", "Manual replica assignments and their errors")
def test_manual_assignments(both):
    kafka, _ = compare(both, assignment_errors)
    assert kafka["placed"] == kafka["grow_placed"] == "ok", kafka
    assert kafka["unknown_broker"] == "INVALID_REPLICA_ASSIGNMENT", kafka


def acl_errors(t):
    """Kafka without an authorizer answers the ACL APIs with SECURITY_DISABLED."""
    from kafka import KafkaAdminClient
    from kafka.admin import (ACL, ACLFilter, ACLOperation, ACLPermissionType,
                             ACLResourcePatternType, ResourcePattern, ResourcePatternFilter)
    from kafka.admin import ResourceType as KRT
    a = KafkaAdminClient(bootstrap_servers=t.bootstrap)
    out = {}
    f = ACLFilter(principal=None, host="*", operation=ACLOperation.ANY,
                  permission_type=ACLPermissionType.ANY,
                  resource_pattern=ResourcePatternFilter(KRT.ANY, None,
                                                         ACLResourcePatternType.ANY))
    try:
        a.describe_acls(f)
        out["describe"] = "ok"
    except Exception as e:  # kafka-python raises the broker's error as its own class
        out["describe"] = type(e).__name__
    acl = ACL(principal="User:alice", host="*", operation=ACLOperation.READ,
              permission_type=ACLPermissionType.ALLOW,
              resource_pattern=ResourcePattern(KRT.TOPIC, "t", ACLResourcePatternType.LITERAL))
    created = a.create_acls([acl])
    out["create"] = [e.__name__ for e in created["failed"]]
    out["delete"] = [err.__name__ for _, _, err in a.delete_acls([f])]
    a.close()
    # librdkafka's describe_acls on a broker without an authorizer.
    ca = AdminClient({"bootstrap.servers": t.bootstrap})
    cf = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                          AclOperation.ANY, AclPermissionType.ANY)
    out["librdkafka_describe"] = outcome(ca.describe_acls(cf))
    return out


@pytest.mark.compat("kafka-python 3.0 / librdkafka", "ACL APIs without an authorizer (SECURITY_DISABLED)")
def test_acl_apis_without_authorizer(both):
    compare(both, acl_errors)

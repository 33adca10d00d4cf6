"""The Java client (kafka-clients 4.4): the same scenario against Kafka and Fjord, compared.

Each scenario lives in compat/java/Scenarios.java and prints what the stock producer, consumer
and Admin observed; a difference is either fixed in Fjord or written down in
docs/compatibility.md and pinned here.
"""

import json

import pytest

from diff import compare


@pytest.mark.compat("Java client 4.4", "idempotent producer, consumer, offsetsForTimes")
def test_idempotent_producer_and_consumer(both, java):
    compare(both, java, "records")


@pytest.mark.compat("Java client 4.4", "produce errors and record errors (KIP-467)")
def test_produce_errors_with_record_errors(both, java):
    compare(both, java, "produce-errors")


@pytest.mark.compat("Java client 4.4", "Admin: topics, partitions, configs errors, records, offsets, cluster, log dirs, ACLs")
def test_admin_topics_records_offsets_cluster(both, java):
    compare(both, java, "admin")


# Fjord fsyncs before acknowledging acks=all by default (docs/compatibility.md, "Durability").
FLUSH_MESSAGES = ("9223372036854775807", "1")


@pytest.mark.compat("Java client 4.4", "Admin: describe topic configs (sources, synonyms, types)")
def test_topic_configs_described(both, java):
    compare(both, java, "configs", differ={
        "flush.messages.value": FLUSH_MESSAGES,
        "flush.messages.synonyms[0][1]": FLUSH_MESSAGES,
    })


@pytest.mark.compat("Java client 4.4", "consumer group, classic protocol, group Admin")
def test_classic_group(both, java):
    compare(both, java, "group-classic")


@pytest.mark.compat("Java client 4.4", "consumer group, consumer protocol (KIP-848), group Admin")
def test_consumer_protocol_group(both, java):
    compare(both, java, "group-consumer")


@pytest.mark.compat("Java client 4.4", "transactions, read_committed, transaction Admin")
def test_transactions_and_admin(both, java):
    compare(both, java, "transactions")


@pytest.mark.compat("Java client 4.4", "Admin: topics by id, features, fenceProducers, remove members, filtered listings")
def test_admin_more(both, java):
    # Fjord finalizes no feature levels (docs/compatibility.md): no KRaft metadata.version,
    # and transactions v1 only, so clients do not use KIP-890 part 2.
    features = {"eligible.leader.replicas.version": [1, 1], "group.version": [1, 1],
                "metadata.version": [33, 33], "share.version": [2, 2],
                "streams.version": [1, 1], "transaction.version": [2, 2]}
    compare(both, java, "admin-more", differ={
        f"finalized_features.{k}": (v, "<absent>") for k, v in features.items()})


def broker_configs(java):
    """The broker's described configs, addresses and paths made comparable."""
    import re

    def run(t):
        out = java(t, "broker-configs")
        text = json.dumps(out)
        text = re.sub(r"127\.0\.0\.1:\d+", "<address>", text)
        out = json.loads(text)
        for e in out.values():
            if e["value"] and e["value"].startswith("/"):
                e["value"] = "<dir>"
                e["synonyms"] = [[n, "<dir>", s] for n, _, s in e["synonyms"]]
        return out
    return run


@pytest.mark.compat("Java client 4.4", "Admin: describe broker configs (values, sources, types, synonyms)")
def test_broker_configs_described(both, java):
    """Every broker config Fjord describes is described as Kafka describes it; Kafka has more
    (docs/compatibility.md). Broker configs are read-only in Fjord except the replication
    throttles, described (as by Kafka) only once set."""
    kafka_t, fjord_t = both
    run = broker_configs(java)
    kafka, fjord = run(kafka_t), run(fjord_t)
    assert set(fjord) <= set(kafka), f"not Kafka configs: {sorted(set(fjord) - set(kafka))}"
    assert len(fjord) >= 55
    for e in fjord.values():
        assert e["readOnly"] is True
    # Fjord's deliberate differences, pinned.
    assert fjord.pop("log.flush.interval.messages")["value"] == "1"
    assert kafka.pop("log.flush.interval.messages")["value"] == "9223372036854775807"
    assert fjord.pop("max.connections")["value"] == "10000"
    assert kafka.pop("max.connections")["value"] == "2147483647"
    # Fjord has no controller listener of its own yet.
    assert fjord.pop("listeners")["value"] == "PLAINTEXT://<address>"
    assert kafka.pop("listeners")["value"].startswith("PLAINTEXT://<address>,CONTROLLER://")
    shared = {k: {**kafka[k], "readOnly": None} for k in fjord}
    compare(both, lambda t: shared if t is kafka_t else {k: {**v, "readOnly": None}
                                                          for k, v in fjord.items()})

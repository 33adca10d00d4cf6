"""The Java client (kafka-clients 4.4): the same scenario against Kafka and Fjord, compared.

Each scenario lives in compat/java/Scenarios.java and prints what the stock producer, consumer
and Admin observed; a difference is either fixed in Fjord or written down in
docs/compatibility.md and pinned here.
"""

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

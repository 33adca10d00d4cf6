"""franz-go (kgo, kadm): the same scenario against Kafka and Fjord, compared
(compat/go/cmd/scenarios prints what the client observed)."""

import pytest

from diff import compare

CLIENT = "franz-go 1.22 (kgo, kadm 1.20)"


@pytest.mark.compat(CLIENT, "idempotent producer, snappy, assigned consumer")
def test_records(both, franz_go):
    compare(both, franz_go, "records")


@pytest.mark.compat(CLIENT, "consumer group (cooperative-sticky), commits, group admin")
def test_group(both, franz_go):
    compare(both, franz_go, "group")


@pytest.mark.compat(CLIENT, "transactions, read_committed, DescribeTransactions")
def test_transactions(both, franz_go):
    compare(both, franz_go, "transactions")


@pytest.mark.compat(CLIENT, "kadm: topics, configs, partitions, records, offsets, brokers")
def test_admin(both, franz_go):
    compare(both, franz_go, "admin")


@pytest.mark.compat(CLIENT, "consumer group, consumer protocol (KIP-848, server-side range)")
def test_group_consumer_protocol(both, franz_go):
    compare(both, franz_go, "group-consumer")

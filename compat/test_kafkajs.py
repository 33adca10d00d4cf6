"""kafkajs: the same scenario against Kafka and Fjord, compared (compat/js/scenarios.mjs
prints what the client observed)."""

import pytest

from diff import compare

CLIENT = "kafkajs 2.2.4"


@pytest.mark.compat(CLIENT, "idempotent producer, group consumer, offsets by time")
def test_records(both, kafkajs):
    compare(both, kafkajs, "records")


@pytest.mark.compat(CLIENT, "consumer group, describe, reset and delete")
def test_group(both, kafkajs):
    compare(both, kafkajs, "group")


@pytest.mark.compat(CLIENT, "transactions, read_committed")
def test_transactions(both, kafkajs):
    compare(both, kafkajs, "transactions")


@pytest.mark.compat(CLIENT, "admin: topics, configs, partitions, records, cluster")
def test_admin(both, kafkajs):
    compare(both, kafkajs, "admin")

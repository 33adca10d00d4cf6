"""The Java client (kafka-clients 4.4): the same scenario against Kafka and Fjord, compared.

Each scenario lives in compat/java/Scenarios.java and prints what the stock producer, consumer
and Admin observed; a difference is either fixed in Fjord or written down in
docs/compatibility.md and pinned here.
"""

from diff import compare


def test_idempotent_producer_and_consumer(both, java):
    compare(both, java, "records")


def test_produce_errors_with_record_errors(both, java):
    compare(both, java, "produce-errors")


def test_admin_topics_records_offsets_cluster(both, java):
    compare(both, java, "admin")


# Fjord fsyncs before acknowledging acks=all by default (docs/compatibility.md, "Durability").
FLUSH_MESSAGES = ("9223372036854775807", "1")


def test_topic_configs_described(both, java):
    compare(both, java, "configs", differ={
        "flush.messages.value": FLUSH_MESSAGES,
        "flush.messages.synonyms[0][1]": FLUSH_MESSAGES,
    })


def test_classic_group(both, java):
    compare(both, java, "group-classic")


def test_consumer_protocol_group(both, java):
    compare(both, java, "group-consumer")


def test_transactions_and_admin(both, java):
    compare(both, java, "transactions")

"""The /metrics page read by the Prometheus project's own parser (prometheus_client), with
label values that need escaping and live connections counted."""

import time
import urllib.request

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from conftest import wait_for


def scrape(broker):
    page = urllib.request.urlopen(f"http://127.0.0.1:{broker.http_port}/metrics", timeout=10).read().decode()
    # The parser raises on the first malformed line: the whole scrape must parse.
    return {s.name + repr(sorted(s.labels.items())): s for f in text_string_to_metric_families(page) for s in f.samples}


def samples(parsed, name, **labels):
    return [s for s in parsed.values() if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


@pytest.mark.compat("Prometheus text parser", "/metrics: escaped labels, open connections")
def test_metrics_parse_with_quotes_and_newlines_in_group_ids(broker):
    topic = "metered"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(10)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(10):
        p.produce(topic, value=b"v%d" % i)
    assert p.flush(10) == 0
    group = 'odd "group"\\ with\na newline'
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    # A commit of offset 4 leaves a lag of 6 for this group.
    c.commit(offsets=[TopicPartition(topic, 0, 4)], asynchronous=False)
    parsed = scrape(broker)
    lag = samples(parsed, "fjord_group_lag_records", group=group, topic=topic, partition="0")
    assert [s.value for s in lag] == [6.0], lag
    # The librdkafka consumer and producer hold connections open; the gauge counts them.
    assert samples(parsed, "fjord_connections")[0].value >= 2
    c.close()
    p = admin = None
    # Once every client is gone, the gauge falls back to zero (nothing else is connected).
    assert wait_for(lambda: samples(scrape(broker), "fjord_connections")[0].value == 0, timeout=15)
    accepted = samples(scrape(broker), "fjord_connections_accepted_total")
    assert accepted and accepted[0].value >= 2

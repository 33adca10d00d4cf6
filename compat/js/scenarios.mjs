// kafkajs scenarios: each drives one broker and prints what it observed as JSON, so the
// Python harness can run it against Apache Kafka and against Fjord and compare
// (compat/test_kafkajs.py).
//
// Usage: node scenarios.mjs SCENARIO BOOTSTRAP PREFIX

import { Kafka, logLevel } from "kafkajs";

const [scenario, bootstrap, prefix] = process.argv.slice(2);
if (!prefix) {
  console.error("usage: node scenarios.mjs SCENARIO BOOTSTRAP PREFIX (e.g. records 127.0.0.1:9092 t1)");
  process.exit(2);
}
const kafka = new Kafka({
  clientId: "fjord-compat",
  brokers: bootstrap.split(","),
  logLevel: logLevel.NOTHING,
  retry: { retries: 10, initialRetryTime: 100 },
});

const byPartitionOffset = (a, b) => a.partition - b.partition || Number(a.offset) - Number(b.offset);

/** Runs a consumer in `group` over `topic` until `count` records arrived. */
async function consumeAll(topic, group, count, options = {}) {
  const consumer = kafka.consumer({ groupId: group, ...options });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const got = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`got ${got.length} of ${count} records`)), 60000);
    consumer
      .run({
        eachMessage: async ({ partition, message }) => {
          got.push({
            partition,
            offset: message.offset,
            key: message.key === null ? null : message.key.toString(),
            value: message.value === null ? null : message.value.toString(),
            timestamp: message.timestamp,
            headers: Object.entries(message.headers || {}).map(([k, v]) => [k, v.toString()]),
          });
          if (got.length >= count) {
            clearTimeout(timer);
            resolve();
          }
        },
      })
      .catch(reject);
  });
  await consumer.disconnect();
  return got.sort(byPartitionOffset);
}

async function records() {
  const topic = `${prefix}-records`;
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true });
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const messages = [];
  for (let i = 0; i < 30; i++) {
    messages.push({
      partition: i % 3,
      key: i % 4 === 0 ? null : `k${i}`,
      value: `value-${i}`,
      timestamp: String(1700000000000 + i),
      headers: i % 5 === 0 ? { h: `v${i}` } : undefined,
    });
  }
  const acks = await producer.send({ topic, messages, acks: -1 });
  await producer.disconnect();
  const got = await consumeAll(topic, `${prefix}-reader`, 30);
  const offsets = await admin.fetchOffsets({ groupId: `${prefix}-reader`, topics: [topic] });
  const ends = await admin.fetchTopicOffsets(topic);
  const byTime = await admin.fetchTopicOffsetsByTimestamp(topic, 1700000000010);
  await admin.disconnect();
  return {
    acks: acks.map((a) => [a.partition, a.errorCode]).sort(),
    records: got,
    committed_partitions: offsets[0].partitions.length,
    end_offsets: ends.map((o) => [o.partition, o.offset, o.low]).sort(),
    by_time: byTime.map((o) => [o.partition, o.offset]).sort(),
  };
}

async function group() {
  const topic = `${prefix}-group`;
  const groupId = `${prefix}-g`;
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 4 }], waitForLeaders: true });
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({
    topic,
    messages: Array.from({ length: 40 }, (_, i) => ({ key: `k${i}`, value: "v" })),
  });
  await producer.disconnect();
  const got = await consumeAll(topic, groupId, 40);
  const described = await admin.describeGroups([groupId]);
  const g = described.groups[0];
  const committed = await admin.fetchOffsets({ groupId, topics: [topic] });
  const listed = await admin.listGroups();
  await admin.resetOffsets({ groupId, topic, earliest: true });
  const reset = await admin.fetchOffsets({ groupId, topics: [topic] });
  const deleted = await admin.deleteGroups([groupId]);
  await admin.disconnect();
  return {
    consumed: got.length,
    state: g.state,
    protocol_type: g.protocolType,
    committed: committed[0].partitions.map((p) => [p.partition, p.offset]).sort(),
    listed: listed.groups.some((x) => x.groupId === groupId),
    reset: reset[0].partitions.map((p) => [p.partition, p.offset]).sort(),
    deleted: deleted.map((d) => d.errorCode),
  };
}

async function transactions() {
  const topic = `${prefix}-txn`;
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true });
  const producer = kafka.producer({ transactionalId: `${prefix}-tx`, idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  for (const commit of [true, false, true]) {
    const txn = await producer.transaction();
    await txn.send({
      topic,
      messages: Array.from({ length: 4 }, (_, i) => ({ partition: i % 2, value: `${commit}-${i}` })),
    });
    if (commit) await txn.commit();
    else await txn.abort();
  }
  await producer.disconnect();
  const committed = await consumeAll(topic, `${prefix}-rc`, 8);
  const all = await consumeAll(topic, `${prefix}-ru`, 12, { readUncommitted: true });
  const ends = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  const rows = (rs) => rs.map((r) => [r.partition, r.offset, r.value]);
  return {
    read_committed: rows(committed),
    read_uncommitted: rows(all),
    end_offsets: ends.map((o) => [o.partition, o.offset]).sort(),
  };
}

async function adminScenario() {
  const topic = `${prefix}-admin`;
  const admin = kafka.admin();
  await admin.connect();
  const out = {};
  out.create = await admin.createTopics({
    topics: [{ topic, numPartitions: 2, configEntries: [{ name: "retention.ms", value: "3600000" }] }],
    waitForLeaders: true,
  });
  out.create_again = await admin.createTopics({ topics: [{ topic, numPartitions: 2 }] });
  try {
    await admin.createTopics({ topics: [{ topic: `${topic}-bad`, configEntries: [{ name: "retention.ms", value: "x" }] }] });
    out.create_bad = "ok";
  } catch (e) {
    out.create_bad = e.errors ? e.errors.map((x) => x.type) : e.type || e.name;
  }
  out.listed = (await admin.listTopics()).includes(topic);
  const md = await admin.fetchTopicMetadata({ topics: [topic] });
  out.metadata = md.topics[0].partitions.map((p) => [p.partitionId, p.leader, p.replicas.length]).sort();
  const configs = await admin.describeConfigs({
    resources: [{ type: 2, name: topic }],
    includeSynonyms: false,
  });
  out.configs = Object.fromEntries(
    configs.resources[0].configEntries
      .filter((c) => c.configName !== "flush.messages") // Fjord fsyncs by default (docs/compatibility.md)
      .map((c) => [c.configName, [c.configValue, c.isDefault, c.configSource]]),
  );
  await admin.alterConfigs({
    resources: [{ type: 2, name: topic, configEntries: [{ name: "retention.ms", value: "1000" }] }],
  });
  await admin.createPartitions({ topicPartitions: [{ topic, count: 3 }] });
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({ topic, messages: Array.from({ length: 10 }, () => ({ partition: 0, value: "v" })) });
  await producer.disconnect();
  await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: "4" }] });
  out.offsets = (await admin.fetchTopicOffsets(topic)).map((o) => [o.partition, o.low, o.high]).sort();
  const cluster = await admin.describeCluster();
  out.brokers = cluster.brokers.length;
  out.controller_is_broker = cluster.brokers.some((b) => b.nodeId === cluster.controller);
  await admin.deleteTopics({ topics: [topic] });
  out.listed_after_delete = (await admin.listTopics()).includes(topic);
  await admin.disconnect();
  return out;
}

const scenarios = { records, group, transactions, admin: adminScenario };
if (!scenarios[scenario]) {
  console.error(`unknown scenario ${scenario}; one of ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
try {
  const out = await scenarios[scenario]();
  process.stdout.write(JSON.stringify(out, null, 2) + "\n");
  process.exit(0);
} catch (e) {
  console.error("scenario failed:", e);
  process.exit(1);
}

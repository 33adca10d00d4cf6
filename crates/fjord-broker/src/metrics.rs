//! Broker metrics in Prometheus' text format: counters and histograms kept with atomics, and
//! per-partition gauges read from the logs when scraped.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the request latency buckets.
const BUCKETS: [f64; 14] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Debug, Default)]
struct TopicCounters {
    bytes_in: AtomicU64,
    records_in: AtomicU64,
    bytes_out: AtomicU64,
    records_out: AtomicU64,
}

#[derive(Debug, Default)]
struct ApiStats {
    count: AtomicU64,
    errors: AtomicU64,
    /// Cumulative counts per bucket, plus +Inf at the end.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

/// Everything the broker counts.
#[derive(Debug, Default)]
pub struct Metrics {
    topics: RwLock<BTreeMap<String, TopicCounters>>,
    apis: RwLock<BTreeMap<&'static str, ApiStats>>,
    pub connections_active: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    /// Retried batches an idempotent producer had already written, answered from the log.
    pub duplicate_batches: AtomicU64,
    /// Incremental fetch sessions: sessions, partitions cached, evictions.
    fetch_sessions: [AtomicU64; 3],
    /// In-sync replica changes this broker made as a leader: shrinks, expands.
    pub isr_changes: [AtomicU64; 2],
}

fn with_entry<K: Ord + Clone, V: Default, R>(
    map: &RwLock<BTreeMap<K, V>>,
    key: &K,
    f: impl Fn(&V) -> R,
) -> R {
    if let Some(v) = map.read().unwrap_or_else(|p| p.into_inner()).get(key) {
        return f(v);
    }
    let mut w = map.write().unwrap_or_else(|p| p.into_inner());
    f(w.entry(key.clone()).or_default())
}

impl Metrics {
    pub fn produced(&self, topic: &str, records: u64, bytes: u64) {
        with_entry(&self.topics, &topic.to_string(), |c| {
            c.records_in.fetch_add(records, Ordering::Relaxed);
            c.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        });
    }

    pub fn fetched(&self, topic: &str, records: u64, bytes: u64) {
        with_entry(&self.topics, &topic.to_string(), |c| {
            c.records_out.fetch_add(records, Ordering::Relaxed);
            c.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        });
    }

    /// Takes the fetch session cache's figures (sessions, partitions, evictions).
    pub fn fetch_sessions(&self, (sessions, partitions, evictions): (usize, usize, u64)) {
        let [s, p, e] = &self.fetch_sessions;
        s.store(sessions as u64, Ordering::Relaxed);
        p.store(partitions as u64, Ordering::Relaxed);
        e.store(evictions, Ordering::Relaxed);
    }

    /// Forgets a deleted topic's counters.
    pub fn remove_topic(&self, topic: &str) {
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(topic);
    }

    pub fn request(&self, api: &'static str, elapsed: Duration, failed: bool) {
        with_entry(&self.apis, &api, |s| {
            s.count.fetch_add(1, Ordering::Relaxed);
            if failed {
                s.errors.fetch_add(1, Ordering::Relaxed);
            }
            let secs = elapsed.as_secs_f64();
            let i = BUCKETS
                .iter()
                .position(|b| secs <= *b)
                .unwrap_or(BUCKETS.len());
            s.buckets[i].fetch_add(1, Ordering::Relaxed);
            s.sum_micros
                .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        });
    }

    /// Renders the counters and histograms, then `partitions` (topic, partition, size, start,
    /// end) as gauges.
    pub fn render(&self, partitions: &[(String, i32, u64, i64, i64)]) -> String {
        let mut out = String::with_capacity(4096);
        let topics = self.topics.read().unwrap_or_else(|p| p.into_inner());
        let series = [
            (
                "fjord_topic_bytes_in_total",
                "Bytes of record batches appended by producers.",
                0,
            ),
            (
                "fjord_topic_records_in_total",
                "Records appended by producers.",
                1,
            ),
            (
                "fjord_topic_bytes_out_total",
                "Bytes of record batches sent to fetchers.",
                2,
            ),
            (
                "fjord_topic_records_out_total",
                "Records sent to fetchers.",
                3,
            ),
        ];
        for (name, help, which) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (topic, c) in topics.iter() {
                let v = match which {
                    0 => &c.bytes_in,
                    1 => &c.records_in,
                    2 => &c.bytes_out,
                    _ => &c.records_out,
                };
                let _ = writeln!(
                    out,
                    "{name}{{topic=\"{}\"}} {}",
                    escape(topic),
                    v.load(Ordering::Relaxed)
                );
            }
        }
        drop(topics);
        let apis = self.apis.read().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(
            out,
            "# HELP fjord_requests_total Requests handled, by API.\n# TYPE fjord_requests_total counter"
        );
        for (api, s) in apis.iter() {
            let _ = writeln!(
                out,
                "fjord_requests_total{{api=\"{api}\"}} {}",
                s.count.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP fjord_request_errors_total Requests that closed their connection instead of answering, by API.\n# TYPE fjord_request_errors_total counter"
        );
        for (api, s) in apis.iter() {
            let _ = writeln!(
                out,
                "fjord_request_errors_total{{api=\"{api}\"}} {}",
                s.errors.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP fjord_request_duration_seconds Time from a request's arrival to its response.\n# TYPE fjord_request_duration_seconds histogram"
        );
        for (api, s) in apis.iter() {
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += s.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "fjord_request_duration_seconds_bucket{{api=\"{api}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += s.buckets[BUCKETS.len()].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "fjord_request_duration_seconds_bucket{{api=\"{api}\",le=\"+Inf\"}} {cumulative}"
            );
            let _ = writeln!(
                out,
                "fjord_request_duration_seconds_sum{{api=\"{api}\"}} {}",
                s.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "fjord_request_duration_seconds_count{{api=\"{api}\"}} {cumulative}"
            );
        }
        drop(apis);
        let gauges = [
            (
                "fjord_connections",
                "Open client connections.",
                "gauge",
                self.connections_active.load(Ordering::Relaxed),
            ),
            (
                "fjord_connections_accepted_total",
                "Connections accepted.",
                "counter",
                self.connections_total.load(Ordering::Relaxed),
            ),
            (
                "fjord_connections_refused_total",
                "Connections closed at once for max.connections.",
                "counter",
                self.connections_refused.load(Ordering::Relaxed),
            ),
            (
                "fjord_produce_duplicate_batches_total",
                "Retried batches of idempotent producers found already written and not written again.",
                "counter",
                self.duplicate_batches.load(Ordering::Relaxed),
            ),
            (
                "fjord_fetch_sessions",
                "Incremental fetch sessions (KIP-227) held.",
                "gauge",
                self.fetch_sessions[0].load(Ordering::Relaxed),
            ),
            (
                "fjord_fetch_session_partitions",
                "Partitions cached over all fetch sessions.",
                "gauge",
                self.fetch_sessions[1].load(Ordering::Relaxed),
            ),
            (
                "fjord_fetch_session_evictions_total",
                "Fetch sessions evicted to make room for new ones.",
                "counter",
                self.fetch_sessions[2].load(Ordering::Relaxed),
            ),
            (
                "fjord_partitions",
                "Partitions this broker hosts.",
                "gauge",
                partitions.len() as u64,
            ),
        ];
        for (name, help, kind, v) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
        let per_partition = [
            (
                "fjord_log_size_bytes",
                "Bytes of a partition's log on disk.",
            ),
            (
                "fjord_log_start_offset",
                "First offset of a partition's log.",
            ),
            (
                "fjord_log_end_offset",
                "Offset the next record appended to a partition gets.",
            ),
        ];
        for (i, (name, help)) in per_partition.iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (topic, p, size, start, end) in partitions {
                let v = match i {
                    0 => *size as i64,
                    1 => *start,
                    _ => *end,
                };
                let _ = writeln!(
                    out,
                    "{name}{{topic=\"{}\",partition=\"{p}\"}} {v}",
                    escape(topic)
                );
            }
        }
        out
    }
}

/// Escapes a Prometheus label value (backslash, double quote, newline), as the text format
/// requires: a raw `"` or newline in a group id would break the whole scrape.
pub(crate) fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.produced("orders", 3, 300);
        m.fetched("orders", 2, 200);
        m.request("Produce", Duration::from_micros(700), false);
        m.request("Produce", Duration::from_secs(20), true);
        let text = m.render(&[("orders".into(), 0, 4096, 0, 3)]);
        assert!(text.contains("fjord_topic_records_in_total{topic=\"orders\"} 3"));
        assert!(text.contains("fjord_topic_bytes_out_total{topic=\"orders\"} 200"));
        assert!(text.contains("fjord_requests_total{api=\"Produce\"} 2"));
        assert!(text.contains("fjord_request_errors_total{api=\"Produce\"} 1"));
        assert!(
            text.contains("fjord_request_duration_seconds_bucket{api=\"Produce\",le=\"0.001\"} 1")
        );
        assert!(
            text.contains("fjord_request_duration_seconds_bucket{api=\"Produce\",le=\"+Inf\"} 2")
        );
        assert!(text.contains("fjord_log_end_offset{topic=\"orders\",partition=\"0\"} 3"));
        assert!(text.contains("fjord_partitions 1"));
    }
}

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
//! The `fjord` client commands against a real broker process, including the exact forms the
//! docs promise and the error paths scripts rely on.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::free_port;

struct Broker {
    child: Child,
    bootstrap: String,
    http: String,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn broker() -> Broker {
    broker_with_fd_limit(None)
}

/// A broker, optionally started under a lower RLIMIT_NOFILE (through the shell's `ulimit`).
fn broker_with_fd_limit(limit: Option<u32>) -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let http = format!("127.0.0.1:{}", free_port());
    let mut command = match limit {
        None => Command::new(env!("CARGO_BIN_EXE_fjord")),
        Some(n) => {
            let mut c = Command::new("sh");
            c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\"")])
                .arg(env!("CARGO_BIN_EXE_fjord"));
            c
        }
    };
    let child = command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--http-listen", &http])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "broker did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Broker {
        child,
        bootstrap: format!("127.0.0.1:{port}"),
        http,
        _dir: dir,
    }
}

fn fjord(b: &Broker, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fjord"))
        .args(args)
        .env("FJORD_BOOTSTRAP", &b.bootstrap)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_documented_forms_work_as_written() {
    let b = broker();
    ok(&fjord(
        &b,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "6",
            "--config",
            "retention.ms=86400000",
        ],
        None,
    ));
    let list = ok(&fjord(&b, &["topic", "list"], None));
    assert!(list.lines().next().unwrap().starts_with("NAME"), "{list}");
    assert!(list.contains("orders") && list.contains(" 6 "), "{list}");
    let d = json_lines(&ok(&fjord(
        &b,
        &["topic", "describe", "orders", "--output", "json"],
        None,
    )));
    assert_eq!(d[0]["partitions"].as_array().unwrap().len(), 6);
    assert_eq!(d[0]["configs"]["retention.ms"]["value"], "86400000");
    assert_eq!(d[0]["configs"]["retention.ms"]["default"], false);

    ok(&fjord(
        &b,
        &["produce", "orders", "--key-separator", ":"],
        Some("k1:hello\n"),
    ));
    let got = json_lines(&ok(&fjord(
        &b,
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--count",
            "10",
            "--output",
            "json",
            "--exit",
        ],
        None,
    )));
    assert_eq!(got.len(), 1);
    for field in [
        "topic",
        "partition",
        "offset",
        "timestamp",
        "key",
        "value",
        "headers",
    ] {
        assert!(got[0].get(field).is_some(), "{field} missing: {}", got[0]);
    }
    assert_eq!(got[0]["key"], "k1");
    assert_eq!(got[0]["value"], "hello");

    ok(&fjord(
        &b,
        &["config", "set", "orders", "retention.ms=1000"],
        None,
    ));
    let cfg = ok(&fjord(&b, &["config", "get", "orders"], None));
    assert!(
        cfg.lines()
            .any(|l| l.starts_with("retention.ms") && l.contains("1000") && l.contains("topic")),
        "{cfg}"
    );
    ok(&fjord(&b, &["topic", "delete", "orders"], None));
    assert!(!ok(&fjord(&b, &["topic", "list"], None)).contains("orders"));
}

#[test]
fn produce_and_consume_options() {
    let b = broker();
    ok(&fjord(&b, &["topic", "create", "ev", "-p", "3"], None));
    let input: String = (0..300)
        .map(|i| format!("key{}|value-{i}\n", i % 10))
        .collect();
    let summary = json_lines(&ok(&fjord(
        &b,
        &[
            "produce",
            "ev",
            "-K",
            "|",
            "-H",
            "src=test",
            "-z",
            "zstd",
            "--batch-records",
            "50",
            "--output",
            "json",
        ],
        Some(&input),
    )));
    assert_eq!(summary[0]["records"], 300);
    let all = json_lines(&ok(&fjord(
        &b,
        &["consume", "ev", "--from-beginning", "--exit", "-o", "json"],
        None,
    )));
    assert_eq!(all.len(), 300);
    // The same key always went to the same partition (Kafka's murmur2 partitioner).
    let mut by_key = std::collections::HashMap::new();
    for r in &all {
        by_key
            .entry(r["key"].as_str().unwrap().to_string())
            .or_insert_with(std::collections::HashSet::new)
            .insert(r["partition"].as_i64().unwrap());
        assert_eq!(r["headers"][0]["key"], "src");
    }
    assert!(by_key.values().all(|p| p.len() == 1));
    // Per partition the values come back in the order produced.
    for p in 0..3 {
        let vals: Vec<i64> = all
            .iter()
            .filter(|r| r["partition"] == p)
            .map(|r| {
                r["value"].as_str().unwrap()["value-".len()..]
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(vals.windows(2).all(|w| w[0] < w[1]));
    }
    // Format, partition and offset.
    let some = ok(&fjord(
        &b,
        &[
            "consume", "ev", "-p", "1", "--offset", "2", "--count", "2", "-f", "%p/%o %k",
        ],
        None,
    ));
    let lines: Vec<&str> = some.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].starts_with("1/2 key") && lines[1].starts_with("1/3 key"),
        "{some}"
    );
    // A fixed partition and acks=1.
    ok(&fjord(
        &b,
        &["produce", "ev", "--partition", "2", "--acks", "1"],
        Some("x\ny\n"),
    ));
    let tail = ok(&fjord(
        &b,
        &["consume", "ev", "-p", "2", "--from-beginning", "--exit"],
        None,
    ));
    assert!(tail.ends_with("x\ny\n"), "{tail}");
    // By time: everything is newer than 2020.
    let by_time = ok(&fjord(
        &b,
        &[
            "consume",
            "ev",
            "--from-time",
            "2020-01-01T00:00:00Z",
            "--exit",
        ],
        None,
    ));
    assert_eq!(by_time.lines().count(), 302);
}

#[test]
fn errors_have_exit_codes_and_say_what_to_do() {
    let b = broker();
    let out = fjord(&b, &["topic", "describe", "missing"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("UNKNOWN_TOPIC_OR_PARTITION") && err.contains("fjord topic list"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_fjord"))
        .args([
            "topic",
            "list",
            "--bootstrap",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a broker running there?"));

    let out = fjord(&b, &["topic", "create"], None);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
    let out = fjord(
        &b,
        &["topic", "create", "x", "--config", "retention.ms"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEY=VALUE"));
    ok(&fjord(&b, &["topic", "create", "dup"], None));
    let out = fjord(&b, &["topic", "create", "dup"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("TOPIC_ALREADY_EXISTS"));
    let out = fjord(&b, &["config", "set", "dup", "retention.ms=soon"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("INVALID_CONFIG"));
    let out = fjord(&b, &["consume", "dup", "--partition", "7"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    for cmd in [
        &["topic", "--help"][..],
        &["produce", "--help"],
        &["consume", "--help"],
        &["config", "--help"],
        &["cluster", "info", "--help"],
    ] {
        let help = ok(&fjord(&b, cmd, None));
        assert!(help.contains("Example"), "{cmd:?} help has an example");
    }
    let info = json_lines(&ok(&fjord(&b, &["cluster", "info", "-o", "json"], None)));
    assert_eq!(info[0]["controller_id"], 1);
    assert_eq!(info[0]["brokers"][0]["address"], b.bootstrap.as_str());
    // A single node is the one voter of its quorum (DescribeQuorum), and a registered broker.
    assert_eq!(info[0]["quorum"]["leader_id"], 1);
    assert_eq!(info[0]["quorum"]["voters"], serde_json::json!([1]));
    let node = &info[0]["nodes"][0];
    assert_eq!(node["broker"], "registered");
    assert_eq!(node["quorum"], "leader");
    assert_eq!(node["metadata_offset"], info[0]["quorum"]["high_watermark"]);
    assert_eq!(node["metadata_lag"], 0);
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::Read;
    let mut s = TcpStream::connect(addr).unwrap();
    // One write: a request in pieces can be answered and closed on before the rest lands.
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

fn metric(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("{series} not on the metrics page"))
}

#[test]
fn metrics_move_with_traffic_and_health_answers() {
    let b = broker();
    assert!(http_get(&b.http, "/health").ends_with("ok\n"));
    assert!(http_get(&b.http, "/live").ends_with("ok\n"));
    ok(&fjord(&b, &["topic", "create", "m", "-p", "2"], None));
    let before = http_get(&b.http, "/metrics");
    assert!(before.contains("# TYPE fjord_request_duration_seconds histogram"));
    assert_eq!(metric(&before, "fjord_partitions "), 2.0);
    ok(&fjord(&b, &["produce", "m", "-p", "1"], Some("a\nb\nc\n")));
    ok(&fjord(
        &b,
        &["consume", "m", "--from-beginning", "--exit"],
        None,
    ));
    let after = http_get(&b.http, "/metrics");
    assert_eq!(
        metric(&after, "fjord_topic_records_in_total{topic=\"m\"}"),
        3.0
    );
    assert!(metric(&after, "fjord_topic_bytes_in_total{topic=\"m\"}") > 60.0);
    assert_eq!(
        metric(&after, "fjord_topic_records_out_total{topic=\"m\"}"),
        3.0
    );
    assert_eq!(
        metric(&after, "fjord_log_end_offset{topic=\"m\",partition=\"1\"}"),
        3.0
    );
    assert!(metric(&after, "fjord_log_size_bytes{topic=\"m\",partition=\"1\"}") > 60.0);
    assert!(metric(&after, "fjord_requests_total{api=\"Produce\"}") >= 1.0);
    assert!(
        metric(
            &after,
            "fjord_request_duration_seconds_count{api=\"Fetch\"}"
        ) >= 1.0
    );
    assert!(metric(&after, "fjord_connections_accepted_total ") >= 4.0);
}

#[test]
fn perf_commands_report_rates_and_latencies() {
    let b = broker();
    ok(&fjord(&b, &["topic", "create", "p", "-p", "2"], None));
    let out = json_lines(&ok(&fjord(
        &b,
        &[
            "perf", "produce", "p", "--count", "2000", "--size", "100", "-o", "json",
        ],
        None,
    )));
    assert_eq!(out[0]["records"], 2000);
    assert!(out[0]["records_per_sec"].as_f64().unwrap() > 0.0);
    assert!(out[0]["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    let end: i64 = json_lines(&ok(&fjord(
        &b,
        &["topic", "describe", "p", "-o", "json"],
        None,
    )))[0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["log_end_offset"].as_i64().unwrap())
        .sum();
    assert_eq!(end, 2000, "every record landed");
    let out = json_lines(&ok(&fjord(
        &b,
        &["perf", "consume", "p", "-o", "json"],
        None,
    )));
    assert_eq!(out[0]["records"], 2000);
    let out = json_lines(&ok(&fjord(
        &b,
        &[
            "perf",
            "latency",
            "lat",
            "--rate",
            "200",
            "--seconds",
            "1",
            "-o",
            "json",
        ],
        None,
    )));
    assert_eq!(out[0]["records"], 200);
    let p50 = out[0]["latency_ms"]["p50"].as_f64().unwrap();
    assert!((0.0..1000.0).contains(&p50), "p50 {p50}");
}

#[test]
fn a_partition_keeps_one_file_open() {
    // Index files are written whole when a segment is sealed or closed, so an idle partition
    // holds one descriptor (its active segment's log) and ten thousand partitions fit in a
    // common RLIMIT_NOFILE.
    let b = broker();
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", b.child.id()))
            .unwrap()
            .count()
    };
    ok(&fjord(&b, &["topic", "create", "first", "-p", "1"], None));
    let before = fds();
    ok(&fjord(&b, &["topic", "create", "many", "-p", "400"], None));
    let after = fds();
    assert!(
        after <= before + 400 + 8,
        "400 partitions opened {} descriptors",
        after - before
    );
}

#[test]
fn a_topic_that_cannot_be_opened_is_not_left_half_created() {
    // 300 partitions need more descriptors than the broker has: creation fails with a hint,
    // the topic is taken back, its descriptors released, and the broker keeps serving.
    let b = broker_with_fd_limit(Some(200));
    let out = fjord(&b, &["topic", "create", "toobig", "-p", "300"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("KAFKA_STORAGE_ERROR"), "{err}");
    assert!(err.contains("ulimit -n"), "{err}");
    assert!(err.contains("the topic was not created"), "{err}");
    let list = ok(&fjord(&b, &["topic", "list"], None));
    assert!(!list.contains("toobig"), "{list}");
    ok(&fjord(&b, &["topic", "create", "fits", "-p", "50"], None));
    ok(&fjord(&b, &["produce", "fits", "-p", "3"], Some("a\n")));
}

#[test]
fn partitions_that_cannot_be_opened_are_not_added() {
    // Growing a topic past the descriptor limit fails with the hint and leaves the topic as it
    // was: the same partition count in metadata, the new partitions neither served nor kept.
    let b = broker_with_fd_limit(Some(200));
    ok(&fjord(&b, &["topic", "create", "grow", "-p", "10"], None));
    let out = fjord(&b, &["topic", "alter", "grow", "--partitions", "300"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ulimit -n"), "{err}");
    assert!(err.contains("the topic keeps its 10 partitions"), "{err}");
    let described = ok(&fjord(
        &b,
        &["topic", "describe", "grow", "--output", "json"],
        None,
    ));
    let partitions = described.matches("\"partition\"").count();
    assert_eq!(partitions, 10, "{described}");
    let out = fjord(&b, &["produce", "grow", "-p", "10"], Some("a\n"));
    assert_ne!(out.status.code(), Some(0), "partition 10 is not served");
    // The descriptors came back: growing within the limit works.
    ok(&fjord(
        &b,
        &["topic", "alter", "grow", "--partitions", "20"],
        None,
    ));
    ok(&fjord(&b, &["produce", "grow", "-p", "19"], Some("a\n")));
}

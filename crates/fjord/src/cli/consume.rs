//! `fjord consume`: records of a topic to stdout.

use std::io::Write;

use clap::Args;
use serde_json::json;

use super::{Common, Output, Progress, print_json, text};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  fjord consume orders --from-beginning --count 10 --output json\n  fjord consume orders --partition 2 --offset 1000 --format '%p:%o %k=%v'\n  fjord consume orders --from-time 2026-11-22T09:00:00Z --exit"
)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Read only this partition (default: all).
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Start at the earliest offset.
    #[arg(long, conflicts_with_all = ["offset", "from_time"])]
    pub from_beginning: bool,
    /// Start at this offset (needs --partition, or applies to every partition).
    #[arg(long, conflicts_with = "from_time")]
    pub offset: Option<i64>,
    /// Start at the first record at or after this time: epoch milliseconds or
    /// YYYY-MM-DDTHH:MM:SSZ (UTC).
    #[arg(long, value_name = "TIME")]
    pub from_time: Option<String>,
    /// Stop after this many records.
    #[arg(long, short = 'c')]
    pub count: Option<u64>,
    /// Stop at the end of the log instead of waiting for more.
    #[arg(long, short = 'e')]
    pub exit: bool,
    /// Text format: %t topic, %p partition, %o offset, %T timestamp, %k key, %v value,
    /// %h headers (k=v,...), \n, \t. Ignored with --output json.
    #[arg(long, short = 'f', default_value = "%v")]
    pub format: String,
}

/// Epoch milliseconds from `ms` or an RFC 3339 time (`2026-01-31T09:30:00Z`, fractions and
/// UTC offsets such as `+01:00` allowed). Invalid dates (month 13, hour 25) are refused.
pub fn parse_time(s: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t: jiff::Timestamp = s.parse().map_err(|e| {
        anyhow::anyhow!(
            "time {s:?}: {e}; use epoch milliseconds or an RFC 3339 time such as 2026-01-31T09:30:00Z"
        )
    })?;
    Ok(t.as_millisecond())
}

fn render(format: &str, topic: &str, r: &fjord_client::FetchedRecord) -> String {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek().copied()) {
            ('%', Some(n)) => {
                chars.next();
                match n {
                    't' => out.push_str(topic),
                    'p' => out.push_str(&r.partition.to_string()),
                    'o' => out.push_str(&r.offset.to_string()),
                    'T' => out.push_str(&r.timestamp.to_string()),
                    'k' => out.push_str(&r.key.as_deref().map(text).unwrap_or_default()),
                    'v' => out.push_str(&r.value.as_deref().map(text).unwrap_or_default()),
                    'h' => out.push_str(
                        &r.headers
                            .iter()
                            .map(|(k, v)| {
                                format!("{k}={}", v.as_deref().map(text).unwrap_or_default())
                            })
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                    '%' => out.push('%'),
                    other => {
                        out.push('%');
                        out.push(other);
                    }
                }
            }
            ('\\', Some('n')) => {
                chars.next();
                out.push('\n');
            }
            ('\\', Some('t')) => {
                chars.next();
                out.push('\t');
            }
            _ => out.push(c),
        }
    }
    out
}

pub async fn run(args: ConsumeArgs, common: &Common) -> anyhow::Result<()> {
    let cluster = common.connect_cluster().await?;
    let client = cluster.bootstrap();
    let topic = client
        .topics(Some(std::slice::from_ref(&args.topic)))
        .await
        .map_err(|e| anyhow::anyhow!("{e}; list topics with: fjord topic list"))?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("topic {} not found", args.topic))?;
    let partitions: Vec<i32> = match args.partition {
        Some(p) if topic.partitions.iter().any(|x| x.index == p) => vec![p],
        Some(p) => anyhow::bail!(
            "partition {p} does not exist: {} has {} partition(s)",
            args.topic,
            topic.partitions.len()
        ),
        None => topic.partitions.iter().map(|p| p.index).collect(),
    };
    let start_offsets = match (&args.offset, &args.from_time, args.from_beginning) {
        (Some(o), _, _) => partitions.iter().map(|&p| (p, *o)).collect(),
        (None, Some(t), _) => {
            let ts = parse_time(t)?;
            let found = cluster.list_offsets(&args.topic, &partitions, ts).await?;
            let ends = cluster.list_offsets(&args.topic, &partitions, -1).await?;
            found
                .into_iter()
                .zip(ends)
                .map(|((p, o), (_, end))| (p, if o < 0 { end } else { o }))
                .collect()
        }
        (None, None, true) => cluster.list_offsets(&args.topic, &partitions, -2).await?,
        (None, None, false) => cluster.list_offsets(&args.topic, &partitions, -1).await?,
    };
    let mut positions: Vec<(i32, i64)> = start_offsets;
    let mut done = vec![false; positions.len()];
    let mut printed = 0u64;
    let mut bytes = 0u64;
    let mut progress = Progress::new("consumed");
    let stdout = std::io::stdout();
    'outer: loop {
        let wait = if args.exit { 0 } else { 500 };
        let active: Vec<(i32, i64)> = positions
            .iter()
            .zip(&done)
            .filter(|(_, d)| !**d)
            .map(|(p, _)| *p)
            .collect();
        if active.is_empty() {
            break;
        }
        let fetched = cluster
            .fetch_many(&args.topic, &active, wait, 4 << 20)
            .await?;
        for (partition, f) in fetched {
            let idx = positions
                .iter()
                .position(|(p, _)| *p == partition)
                .unwrap_or(0);
            let mut out = stdout.lock();
            for r in &f.records {
                bytes += r.value.as_ref().map_or(0, Vec::len) as u64;
                match common.output {
                    Output::Json => {
                        drop(out);
                        print_json(&json!({
                            "topic": args.topic,
                            "partition": r.partition,
                            "offset": r.offset,
                            "timestamp": r.timestamp,
                            "key": r.key.as_deref().map(text),
                            "value": r.value.as_deref().map(text),
                            "headers": r.headers.iter().map(|(k, v)| json!({"key": k, "value": v.as_deref().map(text)})).collect::<Vec<_>>(),
                        }));
                        out = stdout.lock();
                    }
                    Output::Table => {
                        let _ = writeln!(out, "{}", render(&args.format, &args.topic, r));
                    }
                }
                printed += 1;
                if args.count.is_some_and(|c| printed >= c) {
                    break 'outer;
                }
            }
            drop(out);
            progress.update(printed, bytes);
            // A start below the log start (records deleted): move up to it.
            let next = if f.records.is_empty() && f.next_offset < f.log_start_offset {
                f.log_start_offset
            } else {
                f.next_offset
            };
            positions[idx].1 = next;
            if args.exit && positions[idx].1 >= f.high_watermark {
                done[idx] = true;
            }
        }
    }
    progress.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("1700000000000").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_time("2023-11-14T22:13:20.5Z").unwrap(),
            1_700_000_000_500
        );
        assert!(parse_time("yesterday").is_err());
        // Offsets move the instant; the same instant in UTC is the same milliseconds.
        assert_eq!(
            parse_time("2023-11-14T23:13:20+01:00").unwrap(),
            1_700_000_000_000
        );
        // Out-of-range fields are refused, not wrapped into another date.
        for bad in [
            "2023-13-01T00:00:00Z",
            "2023-02-30T00:00:00Z",
            "2023-11-14T25:00:00Z",
            "2023-11-14T22:61:00Z",
            "2023-11-14T22:13:20Q",
        ] {
            assert!(parse_time(bad).is_err(), "{bad} was accepted");
        }
        // Non-ASCII input is an error, never a panic (it once sliced inside a character).
        for bad in [
            "2026-01-01T00:00:00.\u{e9}\u{e9}Z",
            "\u{e9}",
            "2026-01-01T00:00:00.0\u{e9}Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad} was accepted");
        }
    }
}

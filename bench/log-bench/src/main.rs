//! Storage benchmark: fjord-log append and cold-read throughput against the raw disk, measured
//! in the same run with the same fsync cadence.
//!
//! For each batch size it measures, `--runs` times:
//! - disk write: `write` + `fdatasync` of the same number of bytes per call into a plain file;
//! - log append: `Log::append_durable` of a batch of 1 KiB records (the safe flush default:
//!   every append waits for its fsync);
//! - disk read: sequential 1 MiB reads of the log's own segment files after evicting them from
//!   the page cache;
//! - log read: `Log::read` + copy of each returned range, segments evicted likewise.
//!
//! Both reads run twice, alternating, and are averaged, since the host under a VM may cache.
//!
//! It prints medians and the ratios log/disk, and a Markdown row for BENCHMARKS.md.
//!
//! Example: `cargo run --release -p log-bench -- --dir /var/tmp/fjord-bench --total-mib 512`

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use fjord_log::{AppendOrigin, FsStorage, Log, LogConfig, ReadUpTo, Storage};
use fjord_record::{BatchBuilder, Compression};

const RECORD: usize = 1024;
const HELP: &str = "\
log-bench: fjord-log append and cold-read throughput against the raw disk

Usage: log-bench [--dir DIR] [--total-mib N] [--batch-kib A,B,..] [--runs N]

  --dir DIR         scratch directory on the disk to measure (default: target/bench-log)
  --total-mib N     bytes written per measurement (default: 256)
  --batch-kib LIST  append sizes in KiB (default: 64,256,1024)
  --runs N          repetitions; medians are reported (default: 3)

Example:
  cargo run --release -p log-bench -- --dir /var/tmp/fjord-bench --total-mib 512 --runs 5
";

struct Args {
    dir: PathBuf,
    total: usize,
    batches: Vec<usize>,
    runs: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        dir: PathBuf::from("target/bench-log"),
        total: 256 << 20,
        batches: vec![64 << 10, 256 << 10, 1 << 20],
        runs: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value; see --help"));
        match flag.as_str() {
            "--dir" => args.dir = PathBuf::from(value("--dir")?),
            "--total-mib" => {
                args.total = value("--total-mib")?
                    .parse::<usize>()
                    .map_err(|e| format!("--total-mib: {e}"))?
                    << 20;
            }
            "--batch-kib" => {
                args.batches = value("--batch-kib")?
                    .split(',')
                    .map(|s| s.trim().parse::<usize>().map(|k| k << 10))
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--batch-kib: {e}"))?;
            }
            "--runs" => {
                args.runs = value("--runs")?
                    .parse()
                    .map_err(|e| format!("--runs: {e}"))?;
            }
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}; see --help")),
        }
    }
    if args.runs == 0 || args.total == 0 || args.batches.is_empty() {
        return Err("--runs, --total-mib and --batch-kib must be positive".into());
    }
    Ok(args)
}

fn mib_per_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn evict(path: &Path) -> std::io::Result<()> {
    let f = File::open(path)?;
    f.sync_all()?;
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed)?;
    Ok(())
}

fn evict_dir(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_file() {
            evict(&p)?;
        }
    }
    Ok(())
}

fn disk_write(dir: &Path, chunk: usize, total: usize) -> std::io::Result<f64> {
    let path = dir.join("raw.bin");
    let _ = std::fs::remove_file(&path);
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)?;
    let buf = vec![0x5au8; chunk];
    let start = Instant::now();
    let mut written = 0;
    while written < total {
        f.write_all(&buf)?;
        f.sync_data()?;
        written += chunk;
    }
    Ok(mib_per_s(written, start.elapsed().as_secs_f64()))
}

/// Sequential 1 MiB reads of every `.log` file in `dir`, evicted from the page cache first:
/// the disk's read bandwidth on exactly the bytes the log serves.
fn disk_read(dir: &Path) -> std::io::Result<f64> {
    evict_dir(dir)?;
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    paths.sort();
    let mut buf = vec![0u8; 1 << 20];
    let start = Instant::now();
    let mut read = 0;
    for path in paths {
        let mut f = File::open(&path)?;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            read += n;
        }
    }
    Ok(mib_per_s(read, start.elapsed().as_secs_f64()))
}

fn build_batch(chunk: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new(Compression::None);
    let value = vec![b'v'; RECORD - 40];
    let records = (chunk / RECORD).max(1);
    for i in 0..records {
        let key = format!("key-{i:08}");
        b.push(1_700_000_000_000, Some(key.as_bytes()), Some(&value));
    }
    b.build().expect("benchmark batch builds")
}

fn log_write(dir: &Path, chunk: usize, total: usize) -> Result<(f64, usize), String> {
    let _ = std::fs::remove_dir_all(dir);
    let storage: Arc<dyn Storage> = Arc::new(FsStorage);
    let log = Log::open(storage, dir, LogConfig::default(), 0).map_err(|e| e.to_string())?;
    let batch = build_batch(chunk);
    let start = Instant::now();
    let mut written = 0;
    while written < total {
        log.append_durable(&batch, AppendOrigin::Client, 1_700_000_000_000)
            .map_err(|e| e.to_string())?;
        written += batch.len();
    }
    let rate = mib_per_s(written, start.elapsed().as_secs_f64());
    log.close().map_err(|e| e.to_string())?;
    Ok((rate, written))
}

fn log_read(dir: &Path) -> Result<f64, String> {
    let storage: Arc<dyn Storage> = Arc::new(FsStorage);
    let log = Log::open(storage, dir, LogConfig::default(), 0).map_err(|e| e.to_string())?;
    evict_dir(dir).map_err(|e| e.to_string())?;
    let end = log.log_end_offset();
    let start = Instant::now();
    let mut offset = 0;
    let mut read = 0usize;
    while offset < end {
        let res = log
            .read(offset, 1 << 20, ReadUpTo::LogEnd, true)
            .map_err(|e| e.to_string())?;
        let Some(slice) = res.data else { break };
        let bytes = slice.read().map_err(|e| e.to_string())?;
        read += bytes.len();
        offset = slice.next_offset;
    }
    Ok(mib_per_s(read, start.elapsed().as_secs_f64()))
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| format!("creating {}: {e}", args.dir.display()))?;
    let raw_dir = args.dir.join("raw");
    let log_dir = args.dir.join("log");
    std::fs::create_dir_all(&raw_dir).map_err(|e| e.to_string())?;
    println!(
        "| batch | disk write MiB/s | log append MiB/s | append/disk | disk read MiB/s | log read MiB/s | read/disk |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &chunk in &args.batches {
        let (mut dw, mut lw, mut dr, mut lr) = (vec![], vec![], vec![], vec![]);
        for run in 0..args.runs {
            eprintln!(
                "[{} KiB batches] run {}/{}: disk write…",
                chunk >> 10,
                run + 1,
                args.runs
            );
            let batch_len = build_batch(chunk).len();
            dw.push(disk_write(&raw_dir, batch_len, args.total).map_err(|e| e.to_string())?);
            eprintln!("  log append…");
            let (rate, _) = log_write(&log_dir, chunk, args.total)?;
            lw.push(rate);
            // Alternate raw and log reads of the same segment files, each from a cold cache.
            eprintln!("  cold reads: disk, log, disk, log…");
            let mut d = Vec::new();
            let mut l = Vec::new();
            for _ in 0..2 {
                d.push(disk_read(&log_dir).map_err(|e| e.to_string())?);
                l.push(log_read(&log_dir)?);
            }
            dr.push(d.iter().sum::<f64>() / d.len() as f64);
            lr.push(l.iter().sum::<f64>() / l.len() as f64);
            eprintln!(
                "  disk write {:.0}, log append {:.0}, disk read {:.0}, log read {:.0} MiB/s",
                dw[run], lw[run], dr[run], lr[run]
            );
        }
        let (dw, lw, dr, lr) = (median(dw), median(lw), median(dr), median(lr));
        println!(
            "| {} KiB | {dw:.0} | {lw:.0} | {:.0}% | {dr:.0} | {lr:.0} | {:.0}% |",
            chunk >> 10,
            100.0 * lw / dw,
            100.0 * lr / dr
        );
    }
    let _ = std::fs::remove_dir_all(&args.dir);
    Ok(())
}

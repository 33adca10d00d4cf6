//! The broker's background work as independent tasks, each on its own schedule and its own
//! blocking thread, so none waits for another: group timers (sessions, join deadlines) every
//! 100 ms, transaction timeouts, transaction markers sent again every 100 ms, `flush.ms` every second, and retention and compaction every
//! `log.retention.check.interval.ms`. A long compaction never delays a session expiry.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::broker::Broker;

/// How often group and transaction timers run.
const TIMER_TICK: Duration = Duration::from_millis(100);
/// How often partitions are checked for a due `flush.ms`.
const FLUSH_TICK: Duration = Duration::from_secs(1);

/// Starts every upkeep task; they stop when `stop` turns true.
pub fn start(broker: &Arc<Broker>, stop: &watch::Receiver<bool>) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let every = Duration::from_millis(broker.config.retention_check_interval_ms.max(1));
    let retention_ms = broker
        .config
        .offsets_retention_minutes
        .saturating_mul(60_000);
    let b = broker.clone();
    tasks.spawn(every_tick(TIMER_TICK, stop.clone(), move || {
        b.groups.tick(b.now_ms(), None)
    }));
    let b = broker.clone();
    tasks.spawn(every_tick(every, stop.clone(), move || {
        b.groups.tick(b.now_ms(), Some(retention_ms))
    }));
    let b = broker.clone();
    tasks.spawn(every_tick(TIMER_TICK, stop.clone(), move || {
        b.txns.tick(b.now_ms())
    }));
    let b = broker.clone();
    tasks.spawn(every_tick(TIMER_TICK, stop.clone(), move || {
        b.txns.retry_markers(b.now_ms())
    }));
    let b = broker.clone();
    tasks.spawn(every_tick(FLUSH_TICK, stop.clone(), move || {
        b.flush_due(b.now_ms())
    }));
    let b = broker.clone();
    tasks.spawn(every_tick(every, stop.clone(), move || {
        b.enforce_retention(b.now_ms())
    }));
    let b = broker.clone();
    tasks.spawn(every_tick(every, stop.clone(), move || {
        b.compact(b.now_ms())
    }));
    tasks
}

/// Runs `job` on a blocking thread every `period` (a run that overruns delays only the next
/// run of the same job) until `stop` turns true.
async fn every_tick(
    period: Duration,
    mut stop: watch::Receiver<bool>,
    job: impl Fn() + Send + Sync + 'static,
) {
    let job = Arc::new(job);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let job = job.clone();
        let _ = tokio::task::spawn_blocking(move || job()).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_job_delays_only_itself() {
        let (stop_tx, stop) = watch::channel(false);
        let quick = Arc::new(AtomicU64::new(0));
        let slow = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        let q = quick.clone();
        tasks.spawn(every_tick(
            Duration::from_millis(20),
            stop.clone(),
            move || {
                q.fetch_add(1, Ordering::Relaxed);
            },
        ));
        let s = slow.clone();
        tasks.spawn(every_tick(
            Duration::from_millis(20),
            stop.clone(),
            move || {
                s.fetch_add(1, Ordering::Relaxed);
                // A compaction that takes a while.
                std::thread::sleep(Duration::from_millis(600));
            },
        ));
        tokio::time::sleep(Duration::from_millis(700)).await;
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
        assert!(
            slow.load(Ordering::Relaxed) <= 2,
            "the slow job ran back to back"
        );
        assert!(
            quick.load(Ordering::Relaxed) >= 10,
            "the quick job kept its pace while the slow one ran ({} runs)",
            quick.load(Ordering::Relaxed)
        );
    }
}

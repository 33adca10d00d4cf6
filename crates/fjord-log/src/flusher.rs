//! Group commit across partitions: a few threads per data directory make appends durable.
//!
//! An acks=all append asks for its log to be synced up to its offset and is told when that is
//! done. Requests for one log that queue up while it waits for a worker are answered by a single
//! fsync, and the workers sync different logs side by side. So many producers writing small
//! batches to many partitions cost about one fsync per dirty partition per round, not one per
//! request and partition, and no thread sits blocked per waiting request.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::{Log, LogError};

/// Called once the log is durable up to the asked offset (or the sync failed).
pub type Done = Box<dyn FnOnce(&Result<(), LogError>) + Send>;

/// The sync workers of one data directory. `T` is whatever the caller keeps its logs in
/// (a partition holding a [`Log`]).
pub struct Flusher<T> {
    shared: Arc<Shared<T>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl<T> std::fmt::Debug for Flusher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = lock(&self.shared.state);
        f.debug_struct("Flusher")
            .field("queued", &state.queue.len())
            .field("stopped", &state.stopped)
            .finish()
    }
}

struct Shared<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

struct State<T> {
    /// Logs with waiters, oldest first; each log appears at most once.
    queue: VecDeque<Arc<T>>,
    /// The waiters of each queued log, by the log's address.
    waiting: HashMap<usize, Waiting>,
    stopped: bool,
}

struct Waiting {
    target: i64,
    done: Vec<Done>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn key<T>(item: &Arc<T>) -> usize {
    Arc::as_ptr(item) as *const () as usize
}

impl<T: AsRef<Log> + Send + Sync + 'static> Flusher<T> {
    /// Starts `workers` sync threads (at least one).
    pub fn start(workers: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                waiting: HashMap::new(),
                stopped: false,
            }),
            ready: Condvar::new(),
        });
        let mut handles = Vec::new();
        for i in 0..workers.max(1) {
            let shared = shared.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("fjord-flush-{i}"))
                    .spawn(move || work(&shared))?,
            );
        }
        Ok(Self {
            shared,
            workers: Mutex::new(handles),
        })
    }

    /// Calls `done` once `item`'s log is durable below `offset`: at once if it already is,
    /// else from a worker thread after the fsync that covers it. After [`Flusher::stop`] the
    /// sync runs on the caller's thread.
    pub fn sync_to(&self, item: &Arc<T>, offset: i64, done: Done) {
        let log = (**item).as_ref();
        if log.durable_offset() >= offset {
            done(&Ok(()));
            return;
        }
        let mut state = lock(&self.shared.state);
        if state.stopped {
            drop(state);
            done(&log.sync_to(offset));
            return;
        }
        match state.waiting.entry(key(item)) {
            Entry::Occupied(mut e) => {
                let w = e.get_mut();
                w.target = w.target.max(offset);
                w.done.push(done);
            }
            Entry::Vacant(e) => {
                e.insert(Waiting {
                    target: offset,
                    done: vec![done],
                });
                state.queue.push_back(item.clone());
                self.shared.ready.notify_one();
            }
        }
    }

    /// Finishes every queued sync and stops the workers.
    pub fn stop(&self) {
        lock(&self.shared.state).stopped = true;
        self.shared.ready.notify_all();
        for handle in lock(&self.workers).drain(..) {
            let _ = handle.join();
        }
    }
}

impl<T> Drop for Flusher<T> {
    fn drop(&mut self) {
        lock(&self.shared.state).stopped = true;
        self.shared.ready.notify_all();
    }
}

fn work<T: AsRef<Log>>(shared: &Shared<T>) {
    loop {
        let (item, waiting) = {
            let mut state = lock(&shared.state);
            loop {
                if let Some(item) = state.queue.pop_front() {
                    let waiting = state
                        .waiting
                        .remove(&key(&item))
                        .expect("a queued log has waiters");
                    break (item, waiting);
                }
                if state.stopped {
                    return;
                }
                state = shared.ready.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        };
        // Waiters that arrive for this log from now on queue it again; its own sync lock makes
        // a second worker wait for this fsync and then find most of its offsets covered.
        let result = (*item).as_ref().sync_to(waiting.target);
        for done in waiting.done {
            done(&result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimStorage;
    use crate::{AppendOrigin, LogConfig};
    use std::sync::mpsc;

    struct Item(Log);
    impl AsRef<Log> for Item {
        fn as_ref(&self) -> &Log {
            &self.0
        }
    }

    fn batch() -> Vec<u8> {
        let mut b = fjord_record::BatchBuilder::new(fjord_record::Compression::None);
        b.push(0, None, Some(b"v"));
        b.build().expect("build")
    }

    #[test]
    fn every_waiter_is_answered_after_its_offset_is_durable() {
        let storage: Arc<dyn crate::Storage> = Arc::new(SimStorage::new());
        let logs: Vec<Arc<Item>> = (0..4)
            .map(|i| {
                let dir = std::path::PathBuf::from(format!("/d/p-{i}"));
                Arc::new(Item(
                    Log::open(storage.clone(), dir, LogConfig::default(), 0).expect("open"),
                ))
            })
            .collect();
        let flusher = Flusher::start(2).expect("start");
        let (tx, rx) = mpsc::channel();
        let mut asked = 0;
        for round in 0..5 {
            for (i, item) in logs.iter().enumerate() {
                let info = item
                    .0
                    .append(&batch(), AppendOrigin::Client, 0)
                    .expect("append");
                let tx = tx.clone();
                let target = info.next_offset();
                let waiter = item.clone();
                flusher.sync_to(
                    item,
                    target,
                    Box::new(move |r| {
                        let durable = waiter.0.durable_offset();
                        tx.send((i, round, r.is_ok(), durable >= target))
                            .expect("send");
                    }),
                );
                asked += 1;
            }
        }
        for _ in 0..asked {
            let (i, round, ok, durable) = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("answered");
            assert!(ok && durable, "log {i} round {round}");
        }
        flusher.stop();
        // After stop, syncs still happen (on the caller's thread).
        let info = logs[0]
            .0
            .append(&batch(), AppendOrigin::Client, 0)
            .expect("append");
        let (tx, rx) = mpsc::channel();
        flusher.sync_to(
            &logs[0],
            info.next_offset(),
            Box::new(move |r| tx.send(r.is_ok()).expect("send")),
        );
        assert!(rx.recv().expect("answered"));
        assert_eq!(logs[0].0.durable_offset(), info.next_offset());
    }
}

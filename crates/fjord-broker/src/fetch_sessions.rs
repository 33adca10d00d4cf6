//! Incremental fetch sessions (KIP-227): the broker remembers what a fetcher asks for, so later
//! fetches name only the partitions that changed and responses carry only the partitions that
//! have something new.
//!
//! Pure state: every call takes `now`; the Fetch handler does the reading. Semantics follow
//! Kafka's broker:
//! - epoch -1 (final): no session; a session named is closed. Epoch 0 (initial): a full fetch
//!   that creates a session when answered (closing the one named, if any). Any other epoch is
//!   an incremental fetch on the named session and must be the session's next epoch
//!   (FETCH_SESSION_ID_NOT_FOUND / INVALID_FETCH_SESSION_EPOCH otherwise).
//! - An incremental fetch adds or updates the partitions it names, drops the forgotten ones,
//!   and is answered for every partition of the session, in session order; a partition is left
//!   out of the response unless it has records, an error, or a changed high watermark or log
//!   start offset. Partitions that returned records move to the end of the session, so a
//!   response size limit serves every partition in turn.
//! - A session that loses its last partition is closed (the response has session id 0).
//! - The cache holds `max.incremental.fetch.session.cache.slots` sessions. When full, a new
//!   session evicts the least recently used one if it has been idle for two minutes, or else
//!   the least valuable one (fewest partitions, consumers before followers) created more than
//!   two minutes ago if the new one is worth more; otherwise it is answered without a session.
//! - Unlike Kafka, the partitions cached over all sessions are bounded
//!   ([`MAX_CACHED_PARTITIONS`]).

use std::collections::HashMap;

use indexmap::IndexMap;
use uuid::Uuid;

use crate::errors;

/// A session may be evicted once idle this long, or, by a more valuable session, once this old
/// (Kafka's `MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS`).
pub const EVICTION_MS: i64 = 120_000;

/// Partitions cached over all sessions at most (~100 bytes each): a session that would take
/// the cache past it is not created, or is closed (its fetch answered without a session).
/// Kafka has no such bound; without one, a thousand sessions of a large request each could
/// hold gigabytes.
pub const MAX_CACHED_PARTITIONS: usize = 1_000_000;

/// How a session names its topics: by name before Fetch v13, by topic id from v13 on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TopicKey {
    Name(String),
    Id(Uuid),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PartitionKey {
    pub topic: TopicKey,
    pub partition: i32,
}

/// What the fetcher asked for a partition; kept for the fetches that do not repeat it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchParams {
    pub fetch_offset: i64,
    pub max_bytes: i32,
    pub current_leader_epoch: i32,
    pub log_start_offset: i64,
    /// The epoch of the last batch the fetcher has (v12+; -1: none given).
    pub last_fetched_epoch: i32,
}

/// What a response said of a partition, to decide whether the next one must say it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answered {
    pub has_records: bool,
    /// It named a preferred read replica or a diverging epoch: sent whatever else changed
    /// (Kafka's `maybeUpdateResponseData`).
    pub must_send: bool,
    pub error: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

#[derive(Clone, Debug)]
struct Cached {
    params: FetchParams,
    high_watermark: i64,
    log_start_offset: i64,
}

#[derive(Debug)]
struct Session {
    privileged: bool,
    uses_topic_ids: bool,
    partitions: IndexMap<PartitionKey, Cached>,
    created_ms: i64,
    last_used_ms: i64,
    /// The epoch the next incremental fetch must carry.
    epoch: i32,
}

/// How to answer one fetch request.
#[derive(Debug, PartialEq, Eq)]
pub enum Context {
    /// No session: the request's partitions, each answered; the response's session id is 0.
    Sessionless,
    /// A full fetch asking for a session: the request's partitions, each answered, then
    /// [`FetchSessions::create`].
    Full,
    /// An incremental fetch: the session's partitions in order, then
    /// [`FetchSessions::answered`] says which of them the response carries.
    Incremental {
        id: i32,
        epoch: i32,
        partitions: Vec<(PartitionKey, FetchParams)>,
    },
    /// A session error: answered with this top-level error code and no partitions.
    Error(i16),
}

/// The epoch that follows `epoch` (1 after `i32::MAX`; the special epochs stay as they are).
pub fn next_epoch(epoch: i32) -> i32 {
    match epoch {
        e if e < 0 => e,
        i32::MAX => 1,
        e => e + 1,
    }
}

/// The broker's fetch sessions.
#[derive(Debug)]
pub struct FetchSessions {
    max_sessions: usize,
    max_partitions: usize,
    sessions: HashMap<i32, Session>,
    /// Partitions cached over all sessions.
    partitions: usize,
    evictions: u64,
    seed: u64,
}

impl FetchSessions {
    /// A cache of at most `max_sessions` sessions (0 turns sessions off); `seed` starts the
    /// session id sequence.
    pub fn new(max_sessions: usize, seed: u64) -> Self {
        Self {
            max_sessions,
            max_partitions: MAX_CACHED_PARTITIONS,
            sessions: HashMap::new(),
            partitions: 0,
            evictions: 0,
            seed,
        }
    }

    /// Sessions, cached partitions, and sessions evicted so far.
    pub fn stats(&self) -> (usize, usize, u64) {
        (self.sessions.len(), self.partitions, self.evictions)
    }

    /// Decides how to answer a request carrying `session_id` and `epoch`, and applies its
    /// partitions (`requested`, `forgotten`) to the session it continues.
    pub fn begin(
        &mut self,
        session_id: i32,
        epoch: i32,
        uses_topic_ids: bool,
        requested: &[(PartitionKey, FetchParams)],
        forgotten: &[PartitionKey],
        now: i64,
    ) -> Context {
        if epoch == 0 || epoch == -1 {
            if session_id != 0 {
                self.remove(session_id);
            }
            return if epoch == 0 {
                Context::Full
            } else {
                Context::Sessionless
            };
        }
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return Context::Error(errors::FETCH_SESSION_ID_NOT_FOUND);
        };
        if session.epoch != epoch {
            return Context::Error(errors::INVALID_FETCH_SESSION_EPOCH);
        }
        if session.uses_topic_ids != uses_topic_ids {
            return Context::Error(errors::FETCH_SESSION_TOPIC_ID_ERROR);
        }
        let before = session.partitions.len();
        for (key, params) in requested {
            match session.partitions.get_mut(key) {
                Some(cached) => cached.params = *params,
                None => {
                    session.partitions.insert(
                        key.clone(),
                        Cached {
                            params: *params,
                            high_watermark: -1,
                            log_start_offset: -1,
                        },
                    );
                }
            }
        }
        for key in forgotten {
            session.partitions.shift_remove(key);
        }
        let after = session.partitions.len();
        self.partitions = self.partitions + after - before;
        if after == 0 || self.partitions > self.max_partitions {
            self.remove(session_id);
            return Context::Sessionless;
        }
        session.last_used_ms = now;
        session.epoch = next_epoch(session.epoch);
        Context::Incremental {
            id: session_id,
            epoch: session.epoch,
            partitions: session
                .partitions
                .iter()
                .map(|(k, c)| (k.clone(), c.params))
                .collect(),
        }
    }

    /// Records how an incremental fetch was answered (`answers` in the order of the context's
    /// partitions, which the session keeps until its epoch moves) and returns which
    /// partitions the response carries, or a session error if the session moved on or went
    /// away while the fetch waited.
    pub fn answered(
        &mut self,
        id: i32,
        epoch: i32,
        answers: &[Answered],
    ) -> Result<Vec<bool>, i16> {
        let Some(session) = self.sessions.get_mut(&id) else {
            return Err(errors::FETCH_SESSION_ID_NOT_FOUND);
        };
        if session.epoch != epoch || session.partitions.len() != answers.len() {
            return Err(errors::INVALID_FETCH_SESSION_EPOCH);
        }
        let mut carried = Vec::with_capacity(answers.len());
        let mut with_records = Vec::new();
        for (i, (cached, a)) in session.partitions.values_mut().zip(answers).enumerate() {
            let mut carry = a.has_records || a.must_send;
            if cached.high_watermark != a.high_watermark {
                cached.high_watermark = a.high_watermark;
                carry = true;
            }
            if cached.log_start_offset != a.log_start_offset {
                cached.log_start_offset = a.log_start_offset;
                carry = true;
            }
            if a.error != errors::NONE {
                // Forget the high watermark, so the partition is sent again once it recovers.
                cached.high_watermark = -1;
                carry = true;
            }
            if a.has_records {
                with_records.push(i);
            }
            carried.push(carry);
        }
        // Partitions that returned records go to the back, in their order; each move shifts
        // the ones after it forward by one.
        let last = session.partitions.len() - 1;
        for (moved, i) in with_records.into_iter().enumerate() {
            session.partitions.move_index(i - moved, last);
        }
        Ok(carried)
    }

    /// Creates a session for a full fetch answered with `answers`; returns its id, or 0 when
    /// the cache is full of sessions worth keeping (the fetcher carries on without one).
    pub fn create(
        &mut self,
        privileged: bool,
        uses_topic_ids: bool,
        answers: &[(PartitionKey, FetchParams, Answered)],
        now: i64,
    ) -> i32 {
        let size = answers.len();
        if self.partitions + size > self.max_partitions {
            return 0;
        }
        if self.sessions.len() >= self.max_sessions && !self.evict_for(privileged, size, now) {
            return 0;
        }
        let mut partitions = IndexMap::with_capacity(size);
        for (key, params, a) in answers {
            partitions.insert(
                key.clone(),
                Cached {
                    params: *params,
                    high_watermark: if a.error == errors::NONE {
                        a.high_watermark
                    } else {
                        -1
                    },
                    log_start_offset: a.log_start_offset,
                },
            );
        }
        let id = self.new_id();
        self.partitions += partitions.len();
        self.sessions.insert(
            id,
            Session {
                privileged,
                uses_topic_ids,
                partitions,
                created_ms: now,
                last_used_ms: now,
                epoch: next_epoch(0),
            },
        );
        id
    }

    fn remove(&mut self, id: i32) {
        if let Some(s) = self.sessions.remove(&id) {
            self.partitions -= s.partitions.len();
        }
    }

    /// Makes room for a new session of `size` partitions, if some session may give way.
    fn evict_for(&mut self, privileged: bool, size: usize, now: i64) -> bool {
        let stale = self
            .sessions
            .iter()
            .min_by_key(|(id, s)| (s.last_used_ms, **id))
            .filter(|(_, s)| now - s.last_used_ms > EVICTION_MS)
            .map(|(id, _)| *id);
        let victim = stale.or_else(|| {
            self.sessions
                .iter()
                .filter(|(_, s)| {
                    let old = now - s.created_ms > EVICTION_MS;
                    old || (privileged && !s.privileged)
                })
                .min_by_key(|(id, s)| (s.privileged, s.partitions.len(), **id))
                .filter(|(_, s)| (privileged, size) > (s.privileged, s.partitions.len()))
                .map(|(id, _)| *id)
        });
        match victim {
            Some(id) => {
                self.remove(id);
                self.evictions += 1;
                true
            }
            None => false,
        }
    }

    /// A fresh positive session id (splitmix64 over the seed).
    fn new_id(&mut self) -> i32 {
        loop {
            self.seed = self.seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let id = (z & 0x7fff_ffff) as i32;
            if id != 0 && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i32) -> PartitionKey {
        PartitionKey {
            topic: TopicKey::Name("t".into()),
            partition: p,
        }
    }

    fn params(offset: i64) -> FetchParams {
        FetchParams {
            last_fetched_epoch: -1,
            fetch_offset: offset,
            max_bytes: 1 << 20,
            current_leader_epoch: -1,
            log_start_offset: -1,
        }
    }

    fn quiet(hw: i64) -> Answered {
        Answered {
            has_records: false,
            must_send: false,
            error: 0,
            high_watermark: hw,
            log_start_offset: 0,
        }
    }

    /// A session over partitions 0..n, each answered with high watermark 10.
    fn open(cache: &mut FetchSessions, n: i32, now: i64) -> i32 {
        let answers: Vec<_> = (0..n).map(|p| (key(p), params(0), quiet(10))).collect();
        cache.create(false, false, &answers, now)
    }

    fn incremental(cache: &mut FetchSessions, id: i32, epoch: i32) -> Vec<PartitionKey> {
        match cache.begin(id, epoch, false, &[], &[], 0) {
            Context::Incremental { partitions, .. } => {
                partitions.into_iter().map(|(k, _)| k).collect()
            }
            other => panic!("expected an incremental context, got {other:?}"),
        }
    }

    #[test]
    fn epochs_decide_between_no_session_a_new_one_and_an_incremental_fetch() {
        let mut cache = FetchSessions::new(10, 7);
        assert_eq!(cache.begin(0, -1, false, &[], &[], 0), Context::Sessionless);
        assert_eq!(cache.begin(0, 0, false, &[], &[], 0), Context::Full);
        let id = open(&mut cache, 2, 0);
        assert!(id > 0);
        assert_eq!(
            cache.begin(id + 1, 1, false, &[], &[], 0),
            Context::Error(errors::FETCH_SESSION_ID_NOT_FOUND)
        );
        assert_eq!(
            cache.begin(id, 2, false, &[], &[], 0),
            Context::Error(errors::INVALID_FETCH_SESSION_EPOCH)
        );
        assert_eq!(
            cache.begin(id, 1, true, &[], &[], 0),
            Context::Error(errors::FETCH_SESSION_TOPIC_ID_ERROR)
        );
        assert_eq!(incremental(&mut cache, id, 1), vec![key(0), key(1)]);
        // The same epoch again (a duplicate request) is refused; the next one is served.
        assert_eq!(
            cache.begin(id, 1, false, &[], &[], 0),
            Context::Error(errors::INVALID_FETCH_SESSION_EPOCH)
        );
        incremental(&mut cache, id, 2);
        // A final-epoch request closes the session.
        assert_eq!(
            cache.begin(id, -1, false, &[], &[], 0),
            Context::Sessionless
        );
        assert_eq!(
            cache.begin(id, 3, false, &[], &[], 0),
            Context::Error(errors::FETCH_SESSION_ID_NOT_FOUND)
        );
        assert_eq!(cache.stats(), (0, 0, 0));
    }

    #[test]
    fn the_epoch_wraps_to_one() {
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(0), 1);
        assert_eq!(next_epoch(-1), -1);
    }

    #[test]
    fn only_changed_partitions_are_answered_and_busy_ones_move_back() {
        let mut cache = FetchSessions::new(10, 7);
        let id = open(&mut cache, 3, 0);
        let Context::Incremental {
            epoch, partitions, ..
        } = cache.begin(id, 1, false, &[(key(1), params(5))], &[], 0)
        else {
            panic!()
        };
        assert_eq!(partitions[1].1.fetch_offset, 5, "updated parameters");
        assert_eq!(partitions[0].1.fetch_offset, 0, "kept parameters");
        let busy = Answered {
            has_records: true,
            must_send: false,
            ..quiet(10)
        };
        let answers = [quiet(10), busy, quiet(11)];
        assert_eq!(
            cache.answered(id, epoch, &answers),
            Ok(vec![false, true, true])
        );
        // Partition 1 returned records: it is now last.
        assert_eq!(incremental(&mut cache, id, 2), vec![key(0), key(2), key(1)]);
        // Nothing changed since: nothing to carry.
        let answers = [quiet(10), quiet(11), quiet(10)];
        assert_eq!(
            cache.answered(id, 3, &answers),
            Ok(vec![false, false, false])
        );
        // Two with records (0 and 1, in session order): both go back, keeping their order.
        incremental(&mut cache, id, 3);
        let answers = [busy, quiet(11), busy];
        assert_eq!(cache.answered(id, 4, &answers), Ok(vec![true, false, true]));
        assert_eq!(incremental(&mut cache, id, 4), vec![key(2), key(0), key(1)]);
        // An answer list that does not match the session is refused.
        assert_eq!(
            cache.answered(id, 5, &[quiet(10)]),
            Err(errors::INVALID_FETCH_SESSION_EPOCH)
        );
    }

    #[test]
    fn an_error_is_always_answered_and_the_partition_again_once_it_clears() {
        let mut cache = FetchSessions::new(10, 7);
        let id = open(&mut cache, 1, 0);
        incremental(&mut cache, id, 1);
        let failed = Answered {
            error: errors::UNKNOWN_TOPIC_OR_PARTITION,
            high_watermark: -1,
            ..quiet(10)
        };
        assert_eq!(cache.answered(id, 2, &[failed]), Ok(vec![true]));
        incremental(&mut cache, id, 2);
        assert_eq!(cache.answered(id, 3, &[quiet(10)]), Ok(vec![true]));
        incremental(&mut cache, id, 3);
        assert_eq!(cache.answered(id, 4, &[quiet(10)]), Ok(vec![false]));
    }

    #[test]
    fn added_partitions_are_answered_and_a_session_without_partitions_closes() {
        let mut cache = FetchSessions::new(10, 7);
        let id = open(&mut cache, 1, 0);
        let Context::Incremental { partitions, .. } =
            cache.begin(id, 1, false, &[(key(5), params(0))], &[], 0)
        else {
            panic!()
        };
        assert_eq!(partitions.len(), 2);
        assert_eq!(cache.stats().1, 2);
        assert_eq!(
            cache.answered(id, 2, &[quiet(10), quiet(0)]),
            Ok(vec![false, true]),
            "a new partition's high watermark is news"
        );
        assert_eq!(
            cache.begin(id, 2, false, &[], &[key(0), key(5)], 0),
            Context::Sessionless
        );
        assert_eq!(cache.stats(), (0, 0, 0));
    }

    #[test]
    fn a_session_that_moved_on_while_the_fetch_waited_is_an_error() {
        let mut cache = FetchSessions::new(10, 7);
        let id = open(&mut cache, 1, 0);
        incremental(&mut cache, id, 1);
        incremental(&mut cache, id, 2);
        assert_eq!(
            cache.answered(id, 2, &[quiet(10)]),
            Err(errors::INVALID_FETCH_SESSION_EPOCH)
        );
        assert_eq!(cache.begin(id, 0, false, &[], &[], 0), Context::Full);
        assert_eq!(
            cache.answered(id, 3, &[quiet(10)]),
            Err(errors::FETCH_SESSION_ID_NOT_FOUND)
        );
    }

    #[test]
    fn a_full_cache_evicts_idle_then_smaller_sessions_and_otherwise_declines() {
        let mut cache = FetchSessions::new(2, 7);
        let a = open(&mut cache, 5, 0);
        let b = open(&mut cache, 3, 1_000);
        // Both young and the newcomer is not bigger: no session for it.
        assert_eq!(open(&mut cache, 3, 2_000), 0);
        // Even a bigger one cannot push out a session younger than the eviction time.
        assert_eq!(open(&mut cache, 9, 2_000), 0);
        // Later: `a` was idle too long and goes first.
        let now = 1 + EVICTION_MS;
        incremental(&mut cache, b, 1);
        cache.sessions.get_mut(&b).unwrap().last_used_ms = now;
        let c = open(&mut cache, 1, now);
        assert!(c > 0);
        assert!(!cache.sessions.contains_key(&a));
        assert_eq!(cache.stats(), (2, 4, 1));
        // Nothing idle; `b` (3 partitions, old enough) gives way to a bigger session only.
        cache.sessions.get_mut(&c).unwrap().last_used_ms = now;
        assert_eq!(open(&mut cache, 2, now + 1_000), 0);
        let d = open(&mut cache, 4, now + 1_000);
        assert!(d > 0 && !cache.sessions.contains_key(&b));
        assert_eq!(cache.stats(), (2, 5, 2));
    }

    #[test]
    fn the_cached_partitions_are_bounded_over_all_sessions() {
        let mut cache = FetchSessions::new(10, 7);
        cache.max_partitions = 5;
        let a = open(&mut cache, 3, 0);
        assert!(a > 0);
        assert_eq!(open(&mut cache, 3, 0), 0, "3 more would make 6");
        let b = open(&mut cache, 2, 0);
        assert!(b > 0);
        // Growing a session past the bound closes it: its fetch is answered sessionless.
        let grow = [(key(9), params(0))];
        assert_eq!(
            cache.begin(a, 1, false, &grow, &[], 0),
            Context::Sessionless
        );
        assert_eq!(cache.stats(), (1, 2, 0));
        assert_eq!(
            cache.begin(a, 2, false, &[], &[], 0),
            Context::Error(errors::FETCH_SESSION_ID_NOT_FOUND)
        );
    }

    #[test]
    fn no_slots_means_no_sessions() {
        let mut cache = FetchSessions::new(0, 7);
        assert_eq!(open(&mut cache, 3, 0), 0);
    }
}

//! Talking to a whole cluster as Kafka clients do: metadata and admin requests to the
//! bootstrap broker (any broker answers them), produce, fetch and offset requests to each
//! partition's leader, on a connection per broker opened when first needed. A request refused
//! because leadership moved (NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE) is sent again after
//! a metadata refresh, a few times.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;

use crate::{Client, ClientError, Fetched, check};

/// Kafka codes that mean "ask the metadata again": the partition moved or has no leader now.
const LEADER_NOT_AVAILABLE: i16 = 5;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;

/// FindCoordinator answers worth asking again: COORDINATOR_LOAD_IN_PROGRESS,
/// COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR.
const COORDINATOR_RETRIABLE: [i16; 3] = [14, 15, 16];

/// How many times a request whose leader moved is sent again.
const ATTEMPTS: usize = 4;

/// The cluster a bootstrap broker belongs to.
pub struct Cluster {
    bootstrap: Arc<Client>,
    client_id: String,
    timeout: Duration,
    /// Broker id → HOST:PORT, from the last metadata.
    brokers: Mutex<HashMap<i32, String>>,
    /// (topic, partition) → leader id, from the last metadata of that topic.
    leaders: Mutex<HashMap<(String, i32), i32>>,
    /// Open connections by broker address.
    conns: tokio::sync::Mutex<HashMap<String, Arc<Client>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("bootstrap", &self.bootstrap.addr())
            .finish_non_exhaustive()
    }
}

fn moved(e: &ClientError) -> bool {
    matches!(e, ClientError::Kafka { code, .. } if *code == NOT_LEADER_OR_FOLLOWER || *code == LEADER_NOT_AVAILABLE)
}

impl Cluster {
    /// Connects to the bootstrap broker.
    pub async fn connect(
        bootstrap: &str,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let client = Arc::new(Client::connect(bootstrap, client_id, timeout).await?);
        Ok(Self {
            conns: tokio::sync::Mutex::new(HashMap::from([(
                bootstrap.to_string(),
                client.clone(),
            )])),
            bootstrap: client,
            client_id: client_id.to_string(),
            timeout,
            brokers: Mutex::default(),
            leaders: Mutex::default(),
        })
    }

    /// The bootstrap broker, for metadata and admin requests.
    pub fn bootstrap(&self) -> &Client {
        &self.bootstrap
    }

    /// Learns the brokers and `topic`'s partition leaders again.
    async fn refresh(&self, topic: &str) -> Result<(), ClientError> {
        let md = self
            .bootstrap
            .metadata(Some(&[topic.to_string()]), false)
            .await?;
        {
            let mut brokers = self.brokers.lock().unwrap_or_else(|p| p.into_inner());
            for b in &md.brokers {
                brokers.insert(b.node_id.0, format!("{}:{}", b.host, b.port));
            }
        }
        let mut leaders = self.leaders.lock().unwrap_or_else(|p| p.into_inner());
        leaders.retain(|(t, _), _| t != topic);
        for t in &md.topics {
            check(t.error_code, None)?;
            for p in &t.partitions {
                leaders.insert((topic.to_string(), p.partition_index), p.leader_id.0);
            }
        }
        Ok(())
    }

    /// The connection to the leader of `topic`'s `partition` (metadata asked when unknown).
    async fn leader(&self, topic: &str, partition: i32) -> Result<Arc<Client>, ClientError> {
        let key = (topic.to_string(), partition);
        let known = || {
            self.leaders
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .copied()
        };
        if known().is_none() {
            self.refresh(topic).await?;
        }
        let leader = known().ok_or_else(|| {
            ClientError::kafka(3, Some(&format!("{topic} has no partition {partition}")))
        })?;
        let addr = self
            .brokers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&leader)
            .cloned()
            .ok_or_else(|| {
                ClientError::kafka(
                    LEADER_NOT_AVAILABLE,
                    Some(&format!(
                        "partition {topic}-{partition} has no leader available (its broker is fenced or down)"
                    )),
                )
            })?;
        self.connection(&addr).await
    }

    /// The connection to the broker at `addr`, opened when first needed.
    async fn connection(&self, addr: &str) -> Result<Arc<Client>, ClientError> {
        let mut conns = self.conns.lock().await;
        if let Some(c) = conns.get(addr) {
            return Ok(c.clone());
        }
        let client = Arc::new(Client::connect(addr, &self.client_id, self.timeout).await?);
        conns.insert(addr.to_string(), client.clone());
        Ok(client)
    }

    /// The connection to the coordinator of a group (`key_type` 0) or a transactional id
    /// (1), found with FindCoordinator; asked again for a while when none is available yet
    /// (its partition is being loaded or has no leader).
    pub async fn coordinator(&self, key: &str, key_type: i8) -> Result<Arc<Client>, ClientError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            match self.bootstrap.find_coordinator(key, key_type).await {
                Ok((_, addr)) => return self.connection(&addr).await,
                Err(ClientError::Kafka { code, .. })
                    if COORDINATOR_RETRIABLE.contains(&code)
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs `call` on the coordinator of a group (`key_type` 0) or a transactional id (1),
    /// found again and called again while it answers COORDINATOR_LOAD_IN_PROGRESS,
    /// COORDINATOR_NOT_AVAILABLE or NOT_COORDINATOR (its partition is loading or has just
    /// moved), until the client's timeout.
    pub async fn with_coordinator<T, F, Fut>(
        &self,
        key: &str,
        key_type: i8,
        call: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let coordinator = self.coordinator(key, key_type).await?;
            match call(coordinator).await {
                Err(ClientError::Kafka { code, .. })
                    if COORDINATOR_RETRIABLE.contains(&code)
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                done => return done,
            }
        }
    }

    /// The connection to the broker at `addr` (a broker's advertised host:port).
    pub async fn broker_at(&self, addr: &str) -> Result<Arc<Client>, ClientError> {
        self.connection(addr).await
    }

    /// Connections to every broker of the cluster (ListGroups and ListTransactions are
    /// answered by each broker for what it coordinates).
    pub async fn brokers(&self) -> Result<Vec<Arc<Client>>, ClientError> {
        let md = self.bootstrap.metadata(Some(&[]), false).await?;
        let mut out = Vec::with_capacity(md.brokers.len());
        for b in &md.brokers {
            out.push(self.connection(&format!("{}:{}", b.host, b.port)).await?);
        }
        Ok(out)
    }

    /// [`Client::describe_producers`] from each partition's leader.
    pub async fn describe_producers(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<(i32, Vec<crate::ProducerDescription>)>, ClientError> {
        let mut out = self
            .by_leader(topic, partitions, |c, ps| async move {
                c.describe_producers(topic, &ps).await
            })
            .await?;
        out.sort_unstable_by_key(|(p, _)| *p);
        Ok(out)
    }

    /// [`Client::fetch`] from the partition's leader.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
        max_bytes: i32,
    ) -> Result<Fetched, ClientError> {
        let mut out = self
            .fetch_many(topic, &[(partition, offset)], max_wait_ms, max_bytes)
            .await?;
        Ok(out.pop().map(|(_, f)| f).unwrap_or_default())
    }

    /// Runs `call` for `partitions` grouped by leader; a group refused because its leader
    /// moved is asked again after a metadata refresh. Results in no particular order.
    async fn by_leader<T, F, Fut>(
        &self,
        topic: &str,
        partitions: &[i32],
        call: F,
    ) -> Result<Vec<T>, ClientError>
    where
        F: Fn(Arc<Client>, Vec<i32>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<T>, ClientError>>,
    {
        let mut pending: Vec<i32> = partitions.to_vec();
        let mut out = Vec::new();
        for attempt in 1..=ATTEMPTS {
            // On the last attempt a moved leader is the caller's error.
            let last = attempt == ATTEMPTS;
            let mut retry = Vec::new();
            let mut groups: BTreeMap<String, (Arc<Client>, Vec<i32>)> = BTreeMap::new();
            for &p in &pending {
                match self.leader(topic, p).await {
                    Ok(client) => groups
                        .entry(client.addr().to_string())
                        .or_insert_with(|| (client, Vec::new()))
                        .1
                        .push(p),
                    Err(e) if moved(&e) && !last => retry.push(p),
                    Err(e) => return Err(e),
                }
            }
            let (keys, calls): (Vec<Vec<i32>>, Vec<_>) = groups
                .into_values()
                .map(|(c, ps)| (ps.clone(), call(c, ps)))
                .unzip();
            for (ps, r) in keys.into_iter().zip(join_all(calls).await) {
                match r {
                    Ok(v) => out.extend(v),
                    Err(e) if moved(&e) && !last => retry.extend(ps),
                    Err(e) => return Err(e),
                }
            }
            if retry.is_empty() {
                break;
            }
            // A leadership change is being published: ask again shortly.
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.refresh(topic).await?;
            pending = retry;
        }
        Ok(out)
    }

    /// [`Client::list_offsets`] from each partition's leader.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<Vec<(i32, i64)>, ClientError> {
        let mut out = self
            .by_leader(topic, partitions, |c, ps| async move {
                c.list_offsets(topic, &ps, timestamp).await
            })
            .await?;
        out.sort_unstable();
        Ok(out)
    }

    /// [`Client::fetch_many`] from each partition's leader (leaders asked side by side);
    /// results in request order.
    pub async fn fetch_many(
        &self,
        topic: &str,
        positions: &[(i32, i64)],
        max_wait_ms: i32,
        max_bytes: i32,
    ) -> Result<Vec<(i32, Fetched)>, ClientError> {
        let at: HashMap<i32, i64> = positions.iter().copied().collect();
        let partitions: Vec<i32> = positions.iter().map(|(p, _)| *p).collect();
        let at = &at;
        let mut fetched: HashMap<i32, Fetched> = self
            .by_leader(topic, &partitions, |c, ps| async move {
                let wanted: Vec<(i32, i64)> = ps.iter().map(|p| (*p, at[p])).collect();
                c.fetch_many(topic, &wanted, max_wait_ms, max_bytes).await
            })
            .await?
            .into_iter()
            .collect();
        Ok(partitions
            .into_iter()
            .filter_map(|p| fetched.remove(&p).map(|f| (p, f)))
            .collect())
    }

    /// [`Client::produce`] to the partition's leader.
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        batch: Bytes,
        acks: i16,
    ) -> Result<i64, ClientError> {
        let out = self
            .by_leader(topic, &[partition], |c, _| {
                let batch = batch.clone();
                async move {
                    c.produce(topic, partition, batch, acks)
                        .await
                        .map(|o| vec![o])
                }
            })
            .await?;
        Ok(out.first().copied().unwrap_or(-1))
    }
}

//! Typed helpers over the raw requests, for the operations tools need.

use std::collections::BTreeMap;

use bytes::Bytes;
use fjord_record::{BatchHeader, Records, split_batches};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, FetchRequest, IncrementalAlterConfigsRequest, ListOffsetsRequest,
    MetadataRequest, MetadataResponse, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::{Client, ClientError, check};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// One partition as metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub index: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// A partition being reassigned: its replicas, those joining and those leaving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassigning {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// One partition's outcome of an ElectLeaders request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionOutcome {
    pub topic: String,
    pub partition: i32,
    pub error_code: i16,
    pub message: Option<String>,
}

/// One topic as metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub id: String,
    pub internal: bool,
    pub partitions: Vec<PartitionInfo>,
}

/// A record read back by [`Client::fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedRecord {
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// What a fetch of one partition returned.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    pub records: Vec<FetchedRecord>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// Where the next fetch should start.
    pub next_offset: i64,
}

/// What a fetch of one partition returned, undecoded.
#[derive(Debug, Clone, Default)]
pub struct FetchedBatches {
    /// Whole record batches (a partial one may end them).
    pub records: Bytes,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

/// A config entry as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub is_default: bool,
    pub read_only: bool,
}

impl Client {
    /// Metadata for the named topics (all topics when `topics` is `None`).
    pub async fn metadata(
        &self,
        topics: Option<&[String]>,
        auto_create: bool,
    ) -> Result<MetadataResponse, ClientError> {
        let mut req = MetadataRequest::default();
        req.topics = topics.map(|t| {
            t.iter()
                .map(|n| MetadataRequestTopic::default().with_name(Some(name(n))))
                .collect()
        });
        req.allow_auto_topic_creation = auto_create;
        self.send(&req).await
    }

    /// A topic's partition count, letting the broker auto-create it when `auto_create` (as a
    /// producer's metadata request does).
    pub async fn partition_count(
        &self,
        topic: &str,
        auto_create: bool,
    ) -> Result<i32, ClientError> {
        let md = self
            .metadata(Some(&[topic.to_string()]), auto_create)
            .await?;
        let t = md
            .topics
            .first()
            .ok_or_else(|| ClientError::kafka(3, Some(topic)))?;
        check(
            t.error_code,
            Some(&StrBytes::from_string(format!("topic '{topic}'"))),
        )?;
        Ok(t.partitions.len() as i32)
    }

    /// Topics as plain data, sorted by name; an error for a requested topic that is missing.
    pub async fn topics(&self, topics: Option<&[String]>) -> Result<Vec<TopicInfo>, ClientError> {
        let md = self.metadata(topics, false).await?;
        let mut out = Vec::new();
        for t in md.topics {
            let topic = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            if t.error_code != 0 {
                return Err(ClientError::kafka(
                    t.error_code,
                    Some(&format!("topic '{topic}'")),
                ));
            }
            let mut partitions: Vec<PartitionInfo> = t
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    index: p.partition_index,
                    leader: p.leader_id.0,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                })
                .collect();
            partitions.sort_by_key(|p| p.index);
            out.push(TopicInfo {
                name: topic,
                id: t.topic_id.to_string(),
                internal: t.is_internal,
                partitions,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Creates a topic; -1 partitions or replication factor means the broker's default.
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), ClientError> {
        let mut t = CreatableTopic::default();
        t.name = name(topic);
        t.num_partitions = partitions;
        t.replication_factor = replication_factor;
        t.configs = configs
            .iter()
            .map(|(k, v)| {
                let mut c = CreatableTopicConfig::default();
                c.name = StrBytes::from_string(k.clone());
                c.value = Some(StrBytes::from_string(v.clone()));
                c
            })
            .collect();
        let mut req = CreateTopicsRequest::default();
        req.topics = vec![t];
        req.timeout_ms = 30_000;
        req.validate_only = validate_only;
        let resp = self.send(&req).await?;
        for r in resp.topics {
            check(r.error_code, r.error_message.as_ref())?;
        }
        Ok(())
    }

    pub async fn delete_topic(&self, topic: &str) -> Result<(), ClientError> {
        let mut req = DeleteTopicsRequest::default();
        let version = self.version::<DeleteTopicsRequest>()?;
        if version >= 6 {
            req.topics = vec![
                kafka_protocol::messages::delete_topics_request::DeleteTopicState::default()
                    .with_name(Some(name(topic))),
            ];
        } else {
            req.topic_names = vec![name(topic)];
        }
        req.timeout_ms = 30_000;
        let resp = self.send(&req).await?;
        for r in resp.responses {
            check(r.error_code, r.error_message.as_ref())?;
        }
        Ok(())
    }

    pub async fn create_partitions(&self, topic: &str, total: i32) -> Result<(), ClientError> {
        let mut t =
            kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic::default();
        t.name = name(topic);
        t.count = total;
        t.assignments = None;
        let mut req = CreatePartitionsRequest::default();
        req.topics = vec![t];
        req.timeout_ms = 30_000;
        let resp = self.send(&req).await?;
        for r in resp.results {
            check(r.error_code, r.error_message.as_ref())?;
        }
        Ok(())
    }

    /// ElectLeaders: `unclean` or preferred elections for `partitions` (topic, partition
    /// indexes), every partition when `None`; each partition's outcome (an error code and
    /// message; ELECTION_NOT_NEEDED when its leader is already the one asked for).
    pub async fn elect_leaders(
        &self,
        unclean: bool,
        partitions: Option<&[(String, Vec<i32>)]>,
    ) -> Result<Vec<ElectionOutcome>, ClientError> {
        use kafka_protocol::messages::ElectLeadersRequest;
        use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
        let mut req = ElectLeadersRequest::default();
        req.election_type = i8::from(unclean);
        req.topic_partitions = partitions.map(|ps| {
            ps.iter()
                .map(|(topic, indexes)| {
                    let mut t = TopicPartitions::default();
                    t.topic = name(topic);
                    t.partitions = indexes.clone();
                    t
                })
                .collect()
        });
        req.timeout_ms = 30_000;
        let resp = self.send(&req).await?;
        check(resp.error_code, None)?;
        Ok(resp
            .replica_election_results
            .into_iter()
            .flat_map(|t| {
                let topic = t.topic.0.to_string();
                t.partition_result
                    .into_iter()
                    .map(move |p| ElectionOutcome {
                        topic: topic.clone(),
                        partition: p.partition_id,
                        error_code: p.error_code,
                        message: p.error_message.map(|m| m.to_string()),
                    })
            })
            .collect())
    }

    /// AlterPartitionReassignments of one partition: moves it to `replicas`, or cancels its
    /// move in progress (`None`).
    pub async fn reassign(
        &self,
        topic: &str,
        partition: i32,
        replicas: Option<&[i32]>,
    ) -> Result<(), ClientError> {
        use kafka_protocol::messages::AlterPartitionReassignmentsRequest;
        use kafka_protocol::messages::alter_partition_reassignments_request::{
            ReassignablePartition, ReassignableTopic,
        };
        let mut p = ReassignablePartition::default();
        p.partition_index = partition;
        p.replicas = replicas.map(|r| r.iter().map(|&b| BrokerId(b)).collect());
        let mut t = ReassignableTopic::default();
        t.name = name(topic);
        t.partitions = vec![p];
        let mut req = AlterPartitionReassignmentsRequest::default();
        req.timeout_ms = 30_000;
        req.allow_replication_factor_change = true;
        req.topics = vec![t];
        let resp = self.send(&req).await?;
        check(resp.error_code, resp.error_message.as_ref())?;
        for t in resp.responses {
            for p in t.partitions {
                check(p.error_code, p.error_message.as_ref())?;
            }
        }
        Ok(())
    }

    /// The partitions being reassigned (of `topic`, or all): (topic, partition, replicas,
    /// adding, removing).
    pub async fn reassignments(&self) -> Result<Vec<Reassigning>, ClientError> {
        use kafka_protocol::messages::ListPartitionReassignmentsRequest;
        let mut req = ListPartitionReassignmentsRequest::default();
        req.timeout_ms = 30_000;
        req.topics = None;
        let resp = self.send(&req).await?;
        check(resp.error_code, resp.error_message.as_ref())?;
        let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<_>>();
        Ok(resp
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| Reassigning {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    replicas: ids(&p.replicas),
                    adding: ids(&p.adding_replicas),
                    removing: ids(&p.removing_replicas),
                })
            })
            .collect())
    }

    /// The size in bytes of every partition replica this broker holds (DescribeLogDirs).
    pub async fn replica_sizes(&self) -> Result<Vec<(String, i32, u64)>, ClientError> {
        use kafka_protocol::messages::DescribeLogDirsRequest;
        let mut req = DescribeLogDirsRequest::default();
        req.topics = None;
        let resp = self.send(&req).await?;
        check(resp.error_code, None)?;
        let mut out = Vec::new();
        for dir in resp.results {
            check(dir.error_code, None)?;
            for t in dir.topics {
                for p in t.partitions {
                    out.push((
                        t.name.0.to_string(),
                        p.partition_index,
                        p.partition_size.max(0) as u64,
                    ));
                }
            }
        }
        Ok(out)
    }

    /// A topic's configs (every one, with whether it is the default).
    pub async fn topic_configs(&self, topic: &str) -> Result<Vec<ConfigEntry>, ClientError> {
        let mut res = DescribeConfigsResource::default();
        res.resource_type = 2;
        res.resource_name = StrBytes::from_string(topic.to_string());
        res.configuration_keys = None;
        let mut req = DescribeConfigsRequest::default();
        req.resources = vec![res];
        let resp = self.send(&req).await?;
        let mut out = Vec::new();
        for r in resp.results {
            check(r.error_code, r.error_message.as_ref())?;
            for c in r.configs {
                out.push(ConfigEntry {
                    name: c.name.to_string(),
                    value: c.value.map(|v| v.to_string()),
                    // 5 = DEFAULT_CONFIG, 4 = STATIC_BROKER_CONFIG: not set on the topic.
                    is_default: c.config_source == 5 || c.config_source == 4,
                    read_only: c.read_only,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Sets (Some) or deletes (None) topic configs, incrementally.
    pub async fn alter_topic_configs(
        &self,
        topic: &str,
        changes: &[(String, Option<String>)],
    ) -> Result<(), ClientError> {
        let mut res = AlterConfigsResource::default();
        res.resource_type = 2;
        res.resource_name = StrBytes::from_string(topic.to_string());
        res.configs = changes
            .iter()
            .map(|(k, v)| {
                let mut c = AlterableConfig::default();
                c.name = StrBytes::from_string(k.clone());
                c.config_operation = if v.is_some() { 0 } else { 1 };
                c.value = v.clone().map(StrBytes::from_string);
                c
            })
            .collect();
        let mut req = IncrementalAlterConfigsRequest::default();
        req.resources = vec![res];
        let resp = self.send(&req).await?;
        for r in resp.responses {
            check(r.error_code, r.error_message.as_ref())?;
        }
        Ok(())
    }

    /// The offset for `timestamp` (-1 latest, -2 earliest, or a time) per partition:
    /// `(partition, offset)`; -1 when no record is that new.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<Vec<(i32, i64)>, ClientError> {
        let mut t = ListOffsetsTopic::default();
        t.name = name(topic);
        t.partitions = partitions
            .iter()
            .map(|&p| {
                let mut lp = ListOffsetsPartition::default();
                lp.partition_index = p;
                lp.timestamp = timestamp;
                lp.current_leader_epoch = -1;
                lp
            })
            .collect();
        let mut req = ListOffsetsRequest::default();
        req.replica_id = BrokerId(-1);
        req.topics = vec![t];
        let resp = self.send(&req).await?;
        let mut out = Vec::new();
        for t in resp.topics {
            for p in t.partitions {
                check(p.error_code, None)?;
                out.push((p.partition_index, p.offset));
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Appends one encoded record batch to a partition; returns its base offset (-1 for acks=0).
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        batch: Bytes,
        acks: i16,
    ) -> Result<i64, ClientError> {
        let mut pd = PartitionProduceData::default();
        pd.index = partition;
        pd.records = Some(batch);
        let mut td = TopicProduceData::default();
        td.name = name(topic);
        td.partition_data = vec![pd];
        let mut req = ProduceRequest::default();
        req.acks = acks;
        req.timeout_ms = 30_000;
        req.topic_data = vec![td];
        if acks == 0 {
            self.send_oneway(&req).await?;
            return Ok(-1);
        }
        let resp = self.send(&req).await?;
        if let Some(p) = resp
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .next()
        {
            check(p.error_code, p.error_message.as_ref())?;
            return Ok(p.base_offset);
        }
        Err(ClientError::Protocol {
            addr: self.addr().to_string(),
            reason: "produce response without the partition".into(),
        })
    }

    /// Fetches from one partition at `offset`, waiting up to `max_wait_ms` for data.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
        max_bytes: i32,
    ) -> Result<Fetched, ClientError> {
        let mut all = self
            .fetch_many(topic, &[(partition, offset)], max_wait_ms, max_bytes)
            .await?;
        Ok(all.pop().map(|(_, f)| f).unwrap_or_default())
    }

    /// Fetches several partitions of a topic in one request; results in request order.
    pub async fn fetch_many(
        &self,
        topic: &str,
        positions: &[(i32, i64)],
        max_wait_ms: i32,
        max_bytes: i32,
    ) -> Result<Vec<(i32, Fetched)>, ClientError> {
        let topic_id = self.fetch_topic_id(topic).await?;
        let raw = self
            .fetch_batches(
                topic,
                topic_id,
                positions,
                max_wait_ms,
                max_bytes,
                max_bytes,
            )
            .await?;
        let bad = |reason: String| ClientError::Protocol {
            addr: self.addr().to_string(),
            reason,
        };
        let mut out = Vec::with_capacity(raw.len());
        for ((p, requested), batches) in positions.iter().copied().zip(raw) {
            let mut f = Fetched {
                next_offset: requested,
                high_watermark: batches.high_watermark,
                log_start_offset: batches.log_start_offset,
                ..Fetched::default()
            };
            for batch in split_batches(&batches.records) {
                // A partial batch at the end of a response is normal: stop there.
                let Ok(batch) = batch else { break };
                let Ok(header) = BatchHeader::parse(batch) else {
                    break;
                };
                f.next_offset = f.next_offset.max(header.next_offset());
                if header.is_control() {
                    continue;
                }
                let decoded = Records::decode(batch, 256 << 20).map_err(|e| {
                    bad(format!(
                        "undecodable batch at offset {}: {e}",
                        header.base_offset
                    ))
                })?;
                for r in decoded.iter() {
                    let r = r.map_err(|e| bad(e.to_string()))?;
                    let offset = r.offset(&header);
                    // Batches start before the requested offset when it lies inside one.
                    if offset < requested {
                        continue;
                    }
                    f.records.push(FetchedRecord {
                        partition: p,
                        offset,
                        timestamp: r.timestamp(&header),
                        key: r.key.map(<[u8]>::to_vec),
                        value: r.value.map(<[u8]>::to_vec),
                        headers: r
                            .headers()
                            .map(|h| {
                                (
                                    String::from_utf8_lossy(h.key).into_owned(),
                                    h.value.map(<[u8]>::to_vec),
                                )
                            })
                            .collect(),
                    });
                }
            }
            out.push((p, f));
        }
        Ok(out)
    }

    /// The topic id a Fetch request needs (v13 and up name topics by id); nil before v13.
    pub async fn fetch_topic_id(&self, topic: &str) -> Result<uuid::Uuid, ClientError> {
        if self.version::<FetchRequest>()? < 13 {
            return Ok(uuid::Uuid::nil());
        }
        let md = self.metadata(Some(&[topic.to_string()]), false).await?;
        let t = md
            .topics
            .first()
            .ok_or_else(|| ClientError::kafka(3, Some(topic)))?;
        check(t.error_code, None)?;
        Ok(t.topic_id)
    }

    /// Fetches several partitions of a topic in one request and returns their record batches
    /// undecoded, in request order (`topic_id` from [`Client::fetch_topic_id`]); at most
    /// `partition_max_bytes` per partition and `max_bytes` in all (beyond one batch).
    pub async fn fetch_batches(
        &self,
        topic: &str,
        topic_id: uuid::Uuid,
        positions: &[(i32, i64)],
        max_wait_ms: i32,
        partition_max_bytes: i32,
        max_bytes: i32,
    ) -> Result<Vec<FetchedBatches>, ClientError> {
        let mut ft = FetchTopic::default();
        ft.topic = name(topic);
        ft.topic_id = topic_id;
        ft.partitions = positions
            .iter()
            .map(|&(partition, offset)| {
                let mut fp = FetchPartition::default();
                fp.partition = partition;
                fp.fetch_offset = offset;
                fp.partition_max_bytes = partition_max_bytes;
                fp.current_leader_epoch = -1;
                fp.last_fetched_epoch = -1;
                fp.log_start_offset = -1;
                fp
            })
            .collect();
        let mut req = FetchRequest::default();
        req.replica_id = BrokerId(-1);
        req.max_wait_ms = max_wait_ms;
        req.min_bytes = 1;
        req.max_bytes = max_bytes;
        req.isolation_level = 0;
        req.session_epoch = -1;
        req.topics = vec![ft];
        let resp = self.send(&req).await?;
        check(resp.error_code, None)?;
        let mut out: Vec<FetchedBatches> = positions
            .iter()
            .map(|_| FetchedBatches::default())
            .collect();
        for t in resp.responses {
            for p in t.partitions {
                check(p.error_code, None)?;
                let Some(i) = positions.iter().position(|(i, _)| *i == p.partition_index) else {
                    continue;
                };
                out[i] = FetchedBatches {
                    records: p.records.unwrap_or_default(),
                    high_watermark: p.high_watermark,
                    log_start_offset: p.log_start_offset,
                };
            }
        }
        Ok(out)
    }
}

/// A group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: String,
}

/// A group member as DescribeGroups reports it, with its decoded consumer assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub assignment: Vec<(String, i32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<GroupMember>,
}

/// GROUP_ID_NOT_FOUND: no such group (DescribeGroups v6+, ConsumerGroupDescribe).
const GROUP_ID_NOT_FOUND: i16 = 69;

fn decode_assignment(bytes: &[u8]) -> Vec<(String, i32)> {
    use kafka_protocol::messages::ConsumerProtocolAssignment;
    use kafka_protocol::protocol::Decodable;
    if bytes.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([bytes[0], bytes[1]]).clamp(0, 3);
    let mut buf = Bytes::copy_from_slice(&bytes[2..]);
    ConsumerProtocolAssignment::decode(&mut buf, version)
        .map(|a| {
            a.assigned_partitions
                .iter()
                .flat_map(|tp| {
                    tp.partitions
                        .iter()
                        .map(move |p| (tp.topic.0.to_string(), *p))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Client {
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        let resp = self
            .send(&kafka_protocol::messages::ListGroupsRequest::default())
            .await?;
        check(resp.error_code, None)?;
        let mut out: Vec<GroupListing> = resp
            .groups
            .into_iter()
            .map(|g| GroupListing {
                group_id: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
            })
            .collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(out)
    }

    /// FindCoordinator: the broker coordinating a group (`key_type` 0) or a transactional id
    /// (1), as (broker id, `HOST:PORT`).
    pub async fn find_coordinator(
        &self,
        key: &str,
        key_type: i8,
    ) -> Result<(i32, String), ClientError> {
        let mut req = kafka_protocol::messages::FindCoordinatorRequest::default();
        let version = self.version::<kafka_protocol::messages::FindCoordinatorRequest>()?;
        req.key_type = key_type;
        if version >= 4 {
            req.coordinator_keys = vec![StrBytes::from_string(key.to_string())];
        } else {
            req.key = StrBytes::from_string(key.to_string());
        }
        let resp = self.send(&req).await?;
        if version >= 4 {
            let c = resp
                .coordinators
                .into_iter()
                .next()
                .ok_or_else(|| ClientError::kafka(15, Some("no coordinator in the answer")))?;
            check(c.error_code, c.error_message.as_ref())?;
            Ok((c.node_id.0, format!("{}:{}", c.host, c.port)))
        } else {
            check(resp.error_code, resp.error_message.as_ref())?;
            Ok((resp.node_id.0, format!("{}:{}", resp.host, resp.port)))
        }
    }

    /// A group as its coordinator describes it: a KIP-848 consumer group through
    /// ConsumerGroupDescribe, a classic one through DescribeGroups (as Kafka's Admin does;
    /// Kafka 4 does not describe consumer groups with DescribeGroups). A group that does not
    /// exist comes back with state "Dead".
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, ClientError> {
        if self
            .version_for::<kafka_protocol::messages::ConsumerGroupDescribeRequest>(
                kafka_protocol::messages::ApiKey::ConsumerGroupDescribe,
            )
            .is_ok()
        {
            let mut req = kafka_protocol::messages::ConsumerGroupDescribeRequest::default();
            req.group_ids = vec![kafka_protocol::messages::GroupId(StrBytes::from_string(
                group.to_string(),
            ))];
            let resp = self.send(&req).await?;
            if let Some(g) = resp.groups.into_iter().next() {
                if g.error_code == 0 {
                    return Ok(GroupDescription {
                        group_id: g.group_id.0.to_string(),
                        state: g.group_state.to_string(),
                        protocol_type: "consumer".to_string(),
                        protocol: g.assignor_name.to_string(),
                        members: g
                            .members
                            .into_iter()
                            .map(|m| GroupMember {
                                member_id: m.member_id.to_string(),
                                group_instance_id: m.instance_id.map(|s| s.to_string()),
                                client_id: m.client_id.to_string(),
                                client_host: m.client_host.to_string(),
                                assignment: m
                                    .assignment
                                    .topic_partitions
                                    .iter()
                                    .flat_map(|t| {
                                        t.partitions
                                            .iter()
                                            .map(|&p| (t.topic_name.0.to_string(), p))
                                    })
                                    .collect(),
                            })
                            .collect(),
                    });
                }
                if g.error_code != GROUP_ID_NOT_FOUND {
                    check(g.error_code, g.error_message.as_ref())?;
                }
            }
        }
        let mut req = kafka_protocol::messages::DescribeGroupsRequest::default();
        req.groups = vec![kafka_protocol::messages::GroupId(StrBytes::from_string(
            group.to_string(),
        ))];
        let resp = self.send(&req).await?;
        let g = resp
            .groups
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::kafka(GROUP_ID_NOT_FOUND, Some(group)))?;
        if g.error_code != GROUP_ID_NOT_FOUND {
            check(g.error_code, g.error_message.as_ref())?;
        }
        Ok(GroupDescription {
            group_id: g.group_id.0.to_string(),
            state: g.group_state.to_string(),
            protocol_type: g.protocol_type.to_string(),
            protocol: g.protocol_data.to_string(),
            members: g
                .members
                .into_iter()
                .map(|m| GroupMember {
                    member_id: m.member_id.to_string(),
                    group_instance_id: m.group_instance_id.map(|s| s.to_string()),
                    client_id: m.client_id.to_string(),
                    client_host: m.client_host.to_string(),
                    assignment: decode_assignment(&m.member_assignment),
                })
                .collect(),
        })
    }

    /// Every committed offset of a group: ((topic, partition), offset).
    pub async fn committed_offsets(
        &self,
        group: &str,
    ) -> Result<Vec<((String, i32), i64)>, ClientError> {
        let mut req = kafka_protocol::messages::OffsetFetchRequest::default();
        let version = self.version::<kafka_protocol::messages::OffsetFetchRequest>()?;
        let mut out = Vec::new();
        if version >= 8 {
            let mut g =
                kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup::default();
            g.group_id =
                kafka_protocol::messages::GroupId(StrBytes::from_string(group.to_string()));
            g.topics = None;
            g.member_epoch = -1;
            req.groups = vec![g];
            let resp = self.send(&req).await?;
            for g in resp.groups {
                check(g.error_code, None)?;
                for t in g.topics {
                    for p in t.partitions {
                        out.push((
                            (t.name.0.to_string(), p.partition_index),
                            p.committed_offset,
                        ));
                    }
                }
            }
        } else {
            req.group_id =
                kafka_protocol::messages::GroupId(StrBytes::from_string(group.to_string()));
            req.topics = None;
            let resp = self.send(&req).await?;
            check(resp.error_code, None)?;
            for t in resp.topics {
                for p in t.partitions {
                    out.push((
                        (t.name.0.to_string(), p.partition_index),
                        p.committed_offset,
                    ));
                }
            }
        }
        out.retain(|(_, o)| *o >= 0);
        out.sort();
        Ok(out)
    }

    /// Commits offsets as a tool outside group management (the group must have no members).
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: &[(String, i32, i64)],
    ) -> Result<(), ClientError> {
        use kafka_protocol::messages::offset_commit_request::{
            OffsetCommitRequestPartition, OffsetCommitRequestTopic,
        };
        let mut by_topic: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
        for (t, p, o) in offsets {
            by_topic.entry(t).or_default().push((*p, *o));
        }
        let mut req = kafka_protocol::messages::OffsetCommitRequest::default();
        req.group_id = kafka_protocol::messages::GroupId(StrBytes::from_string(group.to_string()));
        req.generation_id_or_member_epoch = -1;
        req.retention_time_ms = -1;
        req.topics = by_topic
            .into_iter()
            .map(|(t, parts)| {
                let mut rt = OffsetCommitRequestTopic::default();
                rt.name = name(t);
                rt.partitions = parts
                    .into_iter()
                    .map(|(p, o)| {
                        let mut rp = OffsetCommitRequestPartition::default();
                        rp.partition_index = p;
                        rp.committed_offset = o;
                        rp.committed_leader_epoch = -1;
                        rp.committed_metadata = Some(StrBytes::from_static_str(""));
                        rp
                    })
                    .collect();
                rt
            })
            .collect();
        let resp = self.send(&req).await?;
        for t in resp.topics {
            for p in t.partitions {
                check(p.error_code, None)?;
            }
        }
        Ok(())
    }

    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        let mut req = kafka_protocol::messages::DeleteGroupsRequest::default();
        req.groups_names = vec![kafka_protocol::messages::GroupId(StrBytes::from_string(
            group.to_string(),
        ))];
        let resp = self.send(&req).await?;
        for r in resp.results {
            check(r.error_code, None)?;
        }
        Ok(())
    }
}

/// A transactional id as ListTransactions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionListing {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: String,
}

/// A transaction as DescribeTransactions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionDescription {
    pub transactional_id: String,
    pub state: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    /// When the open transaction started, -1 when none is open.
    pub start_time_ms: i64,
    pub partitions: Vec<(String, i32)>,
}

/// A producer a partition knows, as DescribeProducers reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerDescription {
    pub producer_id: i64,
    pub producer_epoch: i32,
    pub last_sequence: i32,
    pub last_timestamp: i64,
    pub coordinator_epoch: i32,
    /// First offset of the producer's open transaction in the partition, -1 when none.
    pub current_txn_start_offset: i64,
}

impl Client {
    /// ListTransactions, optionally only in the given states.
    pub async fn list_transactions(
        &self,
        states: &[String],
    ) -> Result<Vec<TransactionListing>, ClientError> {
        let mut req = kafka_protocol::messages::ListTransactionsRequest::default();
        req.state_filters = states
            .iter()
            .map(|s| StrBytes::from_string(s.clone()))
            .collect();
        req.duration_filter = -1;
        let resp = self.send(&req).await?;
        check(resp.error_code, None)?;
        let mut out: Vec<TransactionListing> = resp
            .transaction_states
            .into_iter()
            .map(|t| TransactionListing {
                transactional_id: t.transactional_id.0.to_string(),
                producer_id: t.producer_id.0,
                state: t.transaction_state.to_string(),
            })
            .collect();
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        Ok(out)
    }

    pub async fn describe_transaction(
        &self,
        transactional_id: &str,
    ) -> Result<TransactionDescription, ClientError> {
        let mut req = kafka_protocol::messages::DescribeTransactionsRequest::default();
        req.transactional_ids = vec![kafka_protocol::messages::TransactionalId(
            StrBytes::from_string(transactional_id.to_string()),
        )];
        let resp = self.send(&req).await?;
        let t = resp
            .transaction_states
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::kafka(105, Some(transactional_id)))?;
        check(t.error_code, None)?;
        Ok(TransactionDescription {
            transactional_id: t.transactional_id.0.to_string(),
            state: t.transaction_state.to_string(),
            producer_id: t.producer_id.0,
            producer_epoch: t.producer_epoch,
            timeout_ms: t.transaction_timeout_ms,
            start_time_ms: t.transaction_start_time_ms,
            partitions: t
                .topics
                .into_iter()
                .flat_map(|d| {
                    let topic = d.topic.0.to_string();
                    d.partitions.into_iter().map(move |p| (topic.clone(), p))
                })
                .collect(),
        })
    }

    /// DescribeProducers for some partitions of a topic.
    pub async fn describe_producers(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<(i32, Vec<ProducerDescription>)>, ClientError> {
        let mut t = kafka_protocol::messages::describe_producers_request::TopicRequest::default();
        t.name = name(topic);
        t.partition_indexes = partitions.to_vec();
        let mut req = kafka_protocol::messages::DescribeProducersRequest::default();
        req.topics = vec![t];
        let resp = self.send(&req).await?;
        let mut out = Vec::new();
        for t in resp.topics {
            for p in t.partitions {
                check(p.error_code, p.error_message.as_ref())?;
                let producers = p
                    .active_producers
                    .into_iter()
                    .map(|s| ProducerDescription {
                        producer_id: s.producer_id.0,
                        producer_epoch: s.producer_epoch,
                        last_sequence: s.last_sequence,
                        last_timestamp: s.last_timestamp,
                        coordinator_epoch: s.coordinator_epoch,
                        current_txn_start_offset: s.current_txn_start_offset,
                    })
                    .collect();
                out.push((p.partition_index, producers));
            }
        }
        Ok(out)
    }
}

//! DescribeLogDirs: the data directory, its partitions' sizes, and the disk's space.

use std::sync::Arc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};

use super::{RequestContext, str_bytes, topic_name};
use crate::broker::Broker;

pub async fn handle(
    broker: &Arc<Broker>,
    request: DescribeLogDirsRequest,
    ctx: &RequestContext,
) -> DescribeLogDirsResponse {
    let b = broker.clone();
    let version = ctx.version;
    tokio::task::spawn_blocking(move || describe(&b, request, version))
        .await
        .unwrap_or_default()
}

fn describe(
    broker: &Broker,
    request: DescribeLogDirsRequest,
    version: i16,
) -> DescribeLogDirsResponse {
    let state = broker.metadata();
    // null: every topic; otherwise the named partitions that exist here.
    let wanted: Vec<(String, Vec<i32>)> = match request.topics {
        None => state
            .topics()
            .map(|t| (t.name.clone(), (0..t.partitions).collect()))
            .collect(),
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect(),
    };
    let mut result = DescribeLogDirsResult::default();
    let dir = std::fs::canonicalize(&broker.config.data_dir)
        .unwrap_or_else(|_| broker.config.data_dir.clone());
    result.log_dir = str_bytes(dir.display().to_string());
    result.total_bytes = -1;
    result.usable_bytes = -1;
    if version >= 4
        && let Ok(st) = rustix::fs::statvfs(&broker.config.data_dir)
    {
        result.total_bytes = (st.f_blocks * st.f_frsize) as i64;
        result.usable_bytes = (st.f_bavail * st.f_frsize) as i64;
    }
    for (name, partitions) in wanted {
        let mut t = DescribeLogDirsTopic::default();
        t.name = topic_name(&name);
        for index in partitions {
            let Some(p) = broker.hosted(&name, index) else {
                continue;
            };
            let mut d = DescribeLogDirsPartition::default();
            d.partition_index = index;
            d.partition_size = p.log.size_bytes() as i64;
            d.offset_lag = 0;
            t.partitions.push(d);
        }
        if !t.partitions.is_empty() {
            result.topics.push(t);
        }
    }
    let mut response = DescribeLogDirsResponse::default();
    response.results = vec![result];
    response
}

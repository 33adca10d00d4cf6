//! The Fjord broker: a Kafka-protocol server over `fjord-log` partitions and `fjord-meta`
//! metadata. Embeddable: [`server::run`] takes a bound listener, a broker and a shutdown
//! future, so tests run it in-process on port 0 as well as through the `fjord` binary.

mod admin;
pub mod broker;
pub mod clock;
pub mod config;
pub mod coordinator;
pub mod errors;
pub mod fetch_sessions;
pub mod frame;
pub mod handlers;
pub mod ids;
pub mod metrics;
mod publisher;
pub mod replica;
mod replica_fetcher;
pub mod server;
pub mod topic_config;
pub mod upkeep;

pub use broker::{Broker, OpenError};
pub use config::BrokerConfig;

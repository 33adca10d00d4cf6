//! `fjord serve`: flags, environment, config file, data-directory lock, signals.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use fjord_broker::{Broker, BrokerConfig};
use fjord_log::{FsStorage, Storage};

use crate::settings;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to accept Kafka clients on.
    #[arg(long, env = "FJORD_LISTEN", default_value = "127.0.0.1:9092")]
    listen: String,
    /// Address clients are told to connect to (default: the listen address).
    #[arg(long, env = "FJORD_ADVERTISE")]
    advertise: Option<String>,
    /// Directory for the log and metadata.
    #[arg(long, env = "FJORD_DATA_DIR", default_value = "fjord-data")]
    data_dir: PathBuf,
    /// Address for the HTTP endpoints (/health).
    #[arg(long, env = "FJORD_HTTP_LISTEN", default_value = "127.0.0.1:9644")]
    http_listen: String,
    /// TOML file of broker settings with Kafka names (e.g. "num.partitions" = 3).
    #[arg(long, env = "FJORD_CONFIG")]
    config: Option<PathBuf>,
    /// This node's id (Kafka's node.id; default 1, or the config file's).
    #[arg(long, env = "FJORD_NODE_ID")]
    node_id: Option<i32>,
    /// Every voter of the metadata quorum, ID@HOST:PORT,... (Kafka's controller.quorum.voters):
    /// makes this node a member of a cluster (a voter if its --node-id is among them, else a
    /// broker only). Without it the node is a cluster of its own.
    #[arg(long, env = "FJORD_VOTERS")]
    voters: Option<String>,
    /// Where this node's controller listener accepts the quorum's traffic (a voter's address
    /// among --voters; a broker-only node's, where the leader replicates the metadata to it;
    /// needed with --voters).
    #[arg(long, env = "FJORD_CONTROLLER_LISTEN")]
    controller_listen: Option<String>,
    /// `broker` for a node that is not among --voters (a broker-only node), `broker,controller`
    /// for a voter (Kafka's process.roles; checked against --voters).
    #[arg(long, env = "FJORD_PROCESS_ROLES")]
    process_roles: Option<String>,
    /// The rack this broker is in (Kafka's broker.rack).
    #[arg(long, env = "FJORD_RACK")]
    rack: Option<String>,
}

fn split_host_port(s: &str, what: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("{what} {s:?} must be HOST:PORT, e.g. 127.0.0.1:9092"))?;
    let port = port
        .parse::<u16>()
        .with_context(|| format!("{what} {s:?}: port must be a number from 0 to 65535"))?;
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

/// Holds the data directory's lock for as long as it lives.
struct DirLock(#[allow(dead_code)] File);

fn lock_data_dir(dir: &Path) -> anyhow::Result<DirLock> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    let path = dir.join(".lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock(file)),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "data directory {} is in use by another fjord process; stop it or pass a different --data-dir",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// What `meta.properties` says of a data directory.
struct DirIdentity {
    cluster_id: String,
    /// The cluster id was just made (a new directory).
    new: bool,
    directory_id: String,
}

/// The cluster id (and whether it was just made), created on first start and kept in
/// `meta.properties` like Kafka's, with the node id the data directory belongs to (the metadata
/// names this node as the leader of its partitions, so starting it under another `node.id` is
/// refused, as Kafka refuses it) and the directory's id (KIP-853's `directory.id`: voters
/// refuse a voter that comes back with another, a lost disk).
fn dir_identity(dir: &Path, node_id: i32) -> anyhow::Result<DirIdentity> {
    let path = dir.join("meta.properties");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let Some(id) = text.lines().find_map(|l| l.strip_prefix("cluster.id=")) else {
            bail!(
                "{} has no cluster.id line; restore it or move the data directory aside",
                path.display()
            );
        };
        let id = id.trim().to_string();
        let stored_dir = text
            .lines()
            .find_map(|l| l.strip_prefix("directory.id="))
            .map(|d| d.trim().to_string());
        let directory_id = match (
            text.lines().find_map(|l| l.strip_prefix("node.id=")),
            stored_dir,
        ) {
            (Some(stored), _) if stored.trim() != node_id.to_string() => bail!(
                "{} belongs to node.id {} but this broker is node.id {node_id}; start it with node.id {} or use another data directory",
                dir.display(),
                stored.trim(),
                stored.trim()
            ),
            (Some(_), Some(directory_id)) => directory_id,
            // Written by an earlier Fjord (no node.id or no directory.id yet): the directory is
            // this node's from now on, with the id it has or a new one.
            (_, stored_dir) => {
                let directory_id = stored_dir.unwrap_or_else(fjord_broker::ids::random);
                write_meta_properties(dir, &id, node_id, &directory_id)?;
                directory_id
            }
        };
        return Ok(DirIdentity {
            cluster_id: id,
            new: false,
            directory_id,
        });
    }
    let id = fjord_broker::ids::random();
    let directory_id = fjord_broker::ids::random();
    write_meta_properties(dir, &id, node_id, &directory_id)?;
    Ok(DirIdentity {
        cluster_id: id,
        new: true,
        directory_id,
    })
}

/// Replaces `meta.properties` atomically (Kafka's keys: version, cluster.id, node.id,
/// directory.id).
fn write_meta_properties(
    dir: &Path,
    cluster_id: &str,
    node_id: i32,
    directory_id: &str,
) -> anyhow::Result<()> {
    let path = dir.join("meta.properties");
    let tmp = dir.join("meta.properties.tmp");
    std::fs::write(
        &tmp,
        format!(
            "version=1\ncluster.id={cluster_id}\nnode.id={node_id}\ndirectory.id={directory_id}\n"
        ),
    )
    .with_context(|| format!("writing {}", tmp.display()))?;
    File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FJORD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=error")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();

    let mut config = BrokerConfig::default();
    if let Some(path) = &args.config {
        settings::apply_file(&mut config, path)?;
    }
    if let Some(id) = args.node_id {
        config.node_id = id;
    }
    if let Some(voters) = &args.voters {
        config.voters = fjord_broker::config::parse_voters(voters)
            .map_err(|e| anyhow::anyhow!("--voters: {e}"))?;
    }
    if let Some(addr) = &args.controller_listen {
        split_host_port(addr, "--controller-listen")?;
        config.controller_listen = Some(addr.clone());
    }
    if let Some(roles) = &args.process_roles {
        settings::apply(&mut config, "process.roles", roles)
            .map_err(|e| anyhow::anyhow!("--process-roles: {e}"))?;
    }
    if let Some(rack) = &args.rack {
        config.rack = Some(rack.clone());
    }
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid broker settings: {e}"))?;
    let (listen_host, listen_port) = split_host_port(&args.listen, "--listen")?;
    let advertise = args
        .advertise
        .clone()
        .unwrap_or_else(|| args.listen.clone());
    let (adv_host, adv_port) = split_host_port(&advertise, "--advertise")?;
    let http: SocketAddr = args.http_listen.parse().with_context(|| {
        format!(
            "--http-listen {:?} must be IP:PORT, e.g. 127.0.0.1:9644",
            args.http_listen
        )
    })?;
    config.data_dir = args.data_dir.clone();
    let _lock = lock_data_dir(&config.data_dir)?;
    let identity = dir_identity(&config.data_dir, config.node_id)?;
    let (cluster, directory_id) = (identity.cluster_id, identity.directory_id);
    config.new_cluster_id = identity.new;
    config.directory_id = Some(directory_id.clone());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        // Signals are watched before anything listens: a SIGTERM that arrives while the data
        // directory opens stops the broker cleanly once it is open, instead of killing it.
        let shutdown = shutdown_signal();
        // HTTP first: /health answers while the broker opens (503 until it is ready).
        let http_listener = tokio::net::TcpListener::bind(http)
            .await
            .with_context(|| format!("listening on {http} for HTTP: pass --http-listen"))?;
        let http_bound = http_listener.local_addr()?;
        // /health answers from now on: "starting" until the broker is open and caught up with
        // the metadata, then whether it can serve (not fenced, heartbeats taken).
        let opened: Arc<std::sync::OnceLock<Arc<Broker>>> = Arc::default();
        let app = http_app(opened.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(http_listener, app).await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        // Bound now (the port is taken and known, even for port 0) but listening only once
        // the data directory is open: a client that connects finds a ready broker. A
        // controller-only node serves no Kafka clients: it binds nothing.
        let in_use = || {
            format!(
                "listening on {}: is another broker using the port? pass --listen",
                args.listen
            )
        };
        let is_broker = config.is_broker();
        let socket = if is_broker {
            let addr = tokio::net::lookup_host((listen_host.as_str(), listen_port))
                .await
                .with_context(in_use)?
                .next()
                .with_context(in_use)?;
            let socket = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            }
            .with_context(in_use)?;
            socket.set_reuseaddr(true).with_context(in_use)?;
            socket.bind(addr).with_context(in_use)?;
            let bound = socket.local_addr()?;
            config.advertised_host = adv_host;
            config.advertised_port = if adv_port == 0 {
                i32::from(bound.port())
            } else {
                i32::from(adv_port)
            };
            Some((socket, bound))
        } else {
            None
        };
        let storage: Arc<dyn Storage> = Arc::new(FsStorage);
        let (data_dir, node_id, local_cluster) =
            (config.data_dir.clone(), config.node_id, cluster.clone());
        let broker = tokio::task::spawn_blocking(move || Broker::open(config, storage, cluster))
            .await?
            .context("opening the data directory")?;
        if broker.cluster_id != local_cluster {
            // A node that joined a cluster takes the cluster's id.
            write_meta_properties(&data_dir, &broker.cluster_id, node_id, &directory_id)?;
        }
        let Some((socket, bound)) = socket else {
            // A controller only: the quorum (its controller listener) and HTTP.
            if opened.set(broker.clone()).is_err() {
                anyhow::bail!("the broker was opened twice");
            }
            tracing::info!(
                http = %http_bound,
                data_dir = %args.data_dir.display(),
                startup_ms = started.elapsed().as_millis() as u64,
                "fjord is ready (controller only: no Kafka listener)"
            );
            shutdown.await;
            tokio::task::spawn_blocking(move || broker.close()).await?;
            tracing::info!("controller stopped cleanly");
            return anyhow::Ok(());
        };
        let listener = socket.listen(1024).with_context(in_use)?;
        if opened.set(broker.clone()).is_err() {
            anyhow::bail!("the broker was opened twice");
        }
        tracing::info!(
            kafka = %bound,
            http = %http_bound,
            data_dir = %args.data_dir.display(),
            startup_ms = started.elapsed().as_millis() as u64,
            "fjord is ready"
        );
        fjord_broker::server::run(listener, broker, shutdown).await?;
        anyhow::Ok(())
    })
}

/// The HTTP endpoints. Until `opened` holds the broker, /health answers 503 "starting" and the
/// others 503; then /health says whether the broker can serve (200 "ok", else 503 and why).
fn http_app(opened: Arc<std::sync::OnceLock<Arc<Broker>>>) -> axum::Router {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    const STARTING: &str =
        "starting: opening the data directory and catching up with the metadata quorum\n";
    let not_yet = || (StatusCode::SERVICE_UNAVAILABLE, STARTING).into_response();
    let health = {
        let opened = opened.clone();
        move || {
            let opened = opened.clone();
            async move {
                match opened.get() {
                    None => not_yet(),
                    Some(b) => match b.readiness() {
                        Ok(()) => "ok\n".into_response(),
                        Err(why) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {why}\n"),
                        )
                            .into_response(),
                    },
                }
            }
        }
    };
    let history = {
        let opened = opened.clone();
        move |axum::extract::Path(group): axum::extract::Path<String>| {
            let opened = opened.clone();
            async move {
                let Some(b) = opened.get() else {
                    return not_yet();
                };
                let events: Vec<serde_json::Value> = b
                    .groups
                    .history(&group)
                    .into_iter()
                    .map(|e| serde_json::json!({"at_ms": e.at_ms, "event": e.event}))
                    .collect();
                axum::Json(events).into_response()
            }
        }
    };
    let metrics = move || {
        let opened = opened.clone();
        async move {
            let Some(b) = opened.get().cloned() else {
                return not_yet();
            };
            let text = tokio::task::spawn_blocking(move || b.metrics_text())
                .await
                .unwrap_or_default();
            let content_type = [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )];
            (content_type, text).into_response()
        }
    };
    axum::Router::new()
        // Liveness: the process answers (a liveness probe must not restart a node that is
        // starting or waiting for its quorum; /health is the readiness probe).
        .route("/live", axum::routing::get(|| async { "ok\n" }))
        .route("/health", axum::routing::get(health))
        .route("/v1/groups/{group}/history", axum::routing::get(history))
        .route("/metrics", axum::routing::get(metrics))
}

/// Installs the SIGTERM and Ctrl-C handlers now; the future finishes when one arrives (a
/// signal received before it is awaited is kept).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        let (mut term, mut interrupt) = match (term, interrupt) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot watch SIGTERM or SIGINT; stop with kill -9");
                std::future::pending::<()>().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = interrupt.recv() => tracing::info!("interrupt: shutting down"),
        }
    }
}

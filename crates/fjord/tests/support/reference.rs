//! Apache Kafka 4.4 beside Fjord from Rust tests: one call each to start (and wait until
//! ready), wait, and stop (also on drop), through `compat/reference/kafka.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running Apache Kafka KRaft cluster of combined broker+controller nodes.
pub struct KafkaReference {
    dir: PathBuf,
    /// `host:port[,host:port…]` of its brokers.
    pub bootstrap: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../compat/reference/kafka.sh")
}

impl KafkaReference {
    /// Formats and starts `nodes` nodes in `dir` (a fresh directory) and waits until they
    /// serve. Panics with the script's message if Kafka cannot be resolved or started.
    pub fn start(dir: &Path, nodes: usize) -> Self {
        let out = Command::new(script())
            .arg("start")
            .arg(dir)
            .args(["--nodes", &nodes.to_string()])
            .output()
            .expect("run compat/reference/kafka.sh");
        assert!(
            out.status.success(),
            "reference Kafka did not start:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let bootstrap = stdout.lines().last().unwrap_or_default().trim().to_string();
        Self {
            dir: dir.to_path_buf(),
            bootstrap,
        }
    }

    /// Waits until every node serves again (after a restart of one, say).
    #[allow(dead_code)] // part of the one-call API; not every test needs it
    pub fn wait(&self, seconds: u32) {
        let status = Command::new(script())
            .arg("wait")
            .arg(&self.dir)
            .arg(seconds.to_string())
            .status()
            .expect("run compat/reference/kafka.sh");
        assert!(status.success(), "reference Kafka not ready");
    }

    /// Stops every node (SIGTERM, then SIGKILL after 20 s).
    pub fn stop(&self) {
        let _ = Command::new(script()).arg("stop").arg(&self.dir).status();
    }

    /// The first broker's address.
    pub fn first(&self) -> &str {
        self.bootstrap.split(',').next().unwrap_or_default()
    }
}

impl Drop for KafkaReference {
    fn drop(&mut self) {
        self.stop();
    }
}

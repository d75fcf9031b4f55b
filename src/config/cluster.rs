//! `[cluster]`: joining other Starling nodes through NATS. Every node of a cluster names the
//! same NATS servers and the same `prefix`; NATS carries the messages between them, a
//! JetStream stream keeps the retained messages, and a CONNECT on one node takes the client
//! over from any other (see `src/cluster/`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{duration, ConfigError};

/// The cluster section; absent means a single node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS servers, `nats://host:port` (or `tls://host:port`); the client tries them in
    /// turn and moves to another when one fails.
    pub servers: Vec<String>,
    /// This node's name in the cluster, in logs and in the subjects it publishes on. Empty
    /// (default): a random one at each start. Letters, digits, `-` and `_`.
    pub node: String,
    /// The subject prefix (and stream name prefix) the nodes share, so that several clusters
    /// can use one NATS system. Letters, digits, `-` and `_`.
    pub prefix: String,
    /// NATS login, with `password`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// NATS password, with `username`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// NATS token login, instead of `username`/`password`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// CA certificates (PEM) to verify the NATS servers with; TLS is required when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cafile: Option<PathBuf>,
    /// Replicas of the retained-message stream (1 on a single NATS server; 3 is usual on a
    /// NATS cluster). 1..=5.
    pub replicas: usize,
    /// Messages waiting to be sent to the other nodes. When NATS is slower than the broker,
    /// or unreachable, further messages for the other nodes are dropped (counted in
    /// `starling_cluster_messages_dropped_total`); local subscribers still get them.
    pub queue: usize,
    /// How long messages for a node that is away (stopped, crashed, cut off from NATS) wait
    /// in NATS for it, so that its persistent sessions get them when it is back. Only a node
    /// with a `node` name has them: a random name is new at each start.
    #[serde(with = "duration")]
    pub history: Duration,
    /// The most those messages may take in NATS, in bytes; beyond it the oldest go.
    pub history_max_bytes: u64,
    /// How long the start waits for NATS (and the retained messages it holds) before the node
    /// serves alone and joins the cluster when NATS comes.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            servers: vec!["nats://127.0.0.1:4222".to_string()],
            node: String::new(),
            prefix: "starling".to_string(),
            username: None,
            password: None,
            token: None,
            cafile: None,
            replicas: 1,
            queue: 65_536,
            history: Duration::from_secs(3600),
            history_max_bytes: 1 << 30,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Whether `s` can be one NATS subject token and part of a stream name.
fn plain_name(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks `[cluster]`.
pub fn validate(c: &ClusterConfig) -> Result<(), ConfigError> {
    if c.servers.is_empty() || c.servers.iter().any(|s| s.trim().is_empty()) {
        return Err(ConfigError::invalid(
            "cluster.servers",
            "must name at least one NATS server, none empty",
        ));
    }
    if !plain_name(&c.node) || c.node.len() > 64 {
        return Err(ConfigError::invalid(
            "cluster.node",
            "letters, digits, '-' and '_' only, at most 64",
        ));
    }
    if c.prefix.is_empty() || !plain_name(&c.prefix) || c.prefix.len() > 64 {
        return Err(ConfigError::invalid(
            "cluster.prefix",
            "1 to 64 letters, digits, '-' or '_'",
        ));
    }
    if c.username.is_some() != c.password.is_some() {
        return Err(ConfigError::invalid(
            "cluster.password",
            "username and password go together",
        ));
    }
    if c.token.is_some() && c.username.is_some() {
        return Err(ConfigError::invalid(
            "cluster.token",
            "use either token or username/password",
        ));
    }
    if !(1..=5).contains(&c.replicas) {
        return Err(ConfigError::invalid("cluster.replicas", "must be 1..=5"));
    }
    if c.history < Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            "cluster.history",
            "must be at least 1s",
        ));
    }
    if c.history_max_bytes == 0 {
        return Err(ConfigError::invalid(
            "cluster.history_max_bytes",
            "must be more than 0",
        ));
    }
    if c.queue == 0 {
        return Err(ConfigError::invalid("cluster.queue", "must be at least 1"));
    }
    if c.cafile.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
        return Err(ConfigError::invalid(
            "cluster.cafile",
            "must not be empty; leave the key out instead",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn check(toml: &str) -> Result<Config, String> {
        Config::from_toml_str(toml).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_keys() {
        let c = check("[cluster]\n").expect("defaults");
        let cluster = c.cluster.expect("section");
        assert_eq!(cluster.servers, ["nats://127.0.0.1:4222"]);
        assert_eq!(cluster.prefix, "starling");
        assert!(check("").expect("no section").cluster.is_none());
        let c = check("[cluster]\nservers = [\"nats://a:1\", \"tls://b:2\"]\nnode = \"n-1\"\n")
            .expect("keys");
        assert_eq!(c.cluster.expect("section").node, "n-1");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (toml, key) in [
            ("[cluster]\nservers = []\n", "cluster.servers"),
            ("[cluster]\nnode = \"a.b\"\n", "cluster.node"),
            ("[cluster]\nprefix = \"\"\n", "cluster.prefix"),
            ("[cluster]\nprefix = \"a>\"\n", "cluster.prefix"),
            ("[cluster]\nusername = \"u\"\n", "cluster.password"),
            ("[cluster]\nreplicas = 0\n", "cluster.replicas"),
            ("[cluster]\nqueue = 0\n", "cluster.queue"),
            ("[cluster]\nnope = 1\n", "nope"),
        ] {
            let err = check(toml).expect_err(toml);
            assert!(err.contains(key), "{toml}: {err}");
        }
    }
}

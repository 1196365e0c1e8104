//! Probes for terminals that cannot push: an HTTP GET expecting a status, or a TCP connect.

use std::time::Duration;

use firmware_config::config::gateway::{HealthSource, Terminal};
use firmware_config::runtime::clock::Instant;
use tokio_util::sync::CancellationToken;

use super::Terminals;

/// Why a probe found the terminal not answering as expected.
#[derive(Debug, thiserror::Error)]
pub enum ProbeMiss {
    #[error("GET {url}: no answer within {}", humantime::format_duration(*.timeout))]
    NoAnswer { url: String, timeout: Duration },
    #[error("GET {url}: {cause}")]
    Failed { url: String, cause: String },
    #[error("GET {url}: status {status}, expected {expected}")]
    Status {
        url: String,
        status: u16,
        expected: u16,
    },
    #[error("connect {address}: {source}")]
    Refused {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connect {address}: no answer within {}", humantime::format_duration(*.timeout))]
    NoConnection { address: String, timeout: Duration },
}

/// The probe of one terminal, as configured; `None` for a heartbeating terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Http {
        url: String,
        expect_status: u16,
        interval: Duration,
        timeout: Duration,
    },
    Tcp {
        address: String,
        interval: Duration,
        timeout: Duration,
    },
}

impl Probe {
    pub fn of(t: &Terminal) -> Option<Self> {
        match &t.health {
            HealthSource::Heartbeat { .. } => None,
            HealthSource::HttpProbe {
                url,
                expect_status,
                interval,
                timeout,
                ..
            } => Some(Probe::Http {
                url: url.clone(),
                expect_status: *expect_status,
                interval: *interval,
                timeout: *timeout,
            }),
            HealthSource::TcpProbe {
                address,
                interval,
                timeout,
                ..
            } => Some(Probe::Tcp {
                address: address.clone(),
                interval: *interval,
                timeout: *timeout,
            }),
        }
    }

    fn interval(&self) -> Duration {
        match self {
            Probe::Http { interval, .. } | Probe::Tcp { interval, .. } => *interval,
        }
    }

    /// One probe: `Ok` when the terminal answered as expected, else why not.
    pub async fn once(&self, client: &reqwest::Client) -> Result<(), ProbeMiss> {
        match self {
            Probe::Http {
                url,
                expect_status,
                timeout,
                ..
            } => {
                let resp = client
                    .get(url)
                    .timeout(*timeout)
                    .send()
                    .await
                    .map_err(|e| {
                        if e.is_timeout() {
                            ProbeMiss::NoAnswer {
                                url: url.clone(),
                                timeout: *timeout,
                            }
                        } else {
                            ProbeMiss::Failed {
                                url: url.clone(),
                                cause: root_cause(&e),
                            }
                        }
                    })?;
                let status = resp.status().as_u16();
                if status == *expect_status {
                    Ok(())
                } else {
                    Err(ProbeMiss::Status {
                        url: url.clone(),
                        status,
                        expected: *expect_status,
                    })
                }
            }
            Probe::Tcp {
                address, timeout, ..
            } => {
                match tokio::time::timeout(*timeout, tokio::net::TcpStream::connect(address)).await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(source)) => Err(ProbeMiss::Refused {
                        address: address.clone(),
                        source,
                    }),
                    Err(_) => Err(ProbeMiss::NoConnection {
                        address: address.clone(),
                        timeout: *timeout,
                    }),
                }
            }
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A client for probes: no proxy from the environment (terminals are on the LAN), no pooling
/// between probes (each probe is a fresh connection, as a fresh terminal would see it).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap_or_default()
}

/// Probes terminal `id` every interval until cancelled.
pub async fn run(
    id: String,
    probe: Probe,
    terminals: Terminals,
    client: reqwest::Client,
    token: CancellationToken,
) {
    let mut tick = tokio::time::interval(probe.interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        let result = tokio::select! {
            _ = token.cancelled() => return,
            r = probe.once(&client) => r,
        };
        terminals.probed(&id, result, Instant::now());
    }
}

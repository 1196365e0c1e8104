//! A real Mosquitto broker (Debian's package) with a plain and a TLS listener on free ports.
//! The TLS listener requires a client certificate signed by the fixture's CA, takes the
//! certificate's common name as the MQTT username and client id, checks the CA's revocation
//! list, and applies the ACL GridEdge ships (`deploy/mosquitto/gridedge.acl`): each gateway
//! only on its own topics, central (CN `central`) everywhere.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use firmware_config::config::TlsFiles;

use crate::process::ChildProcess;
use crate::{free_port, wait_for_port, FixtureDir, Result, TestPki};

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

pub struct Mosquitto {
    pub port: u16,
    pub tls_port: u16,
    pub pki: TestPki,
    pub server_tls: TlsFiles,
    process: Option<ChildProcess>,
    dir: FixtureDir,
}

impl Mosquitto {
    pub fn start() -> Result<Self> {
        anyhow::ensure!(
            std::path::Path::new(MOSQUITTO).exists(),
            "{MOSQUITTO} not found: run deploy/bootstrap.sh"
        );
        let dir = FixtureDir::new("mosquitto")?;
        let pki = TestPki::new(&dir.join("pki"))?;
        let server_tls = pki.server("broker")?;
        let mut m = Self {
            port: free_port(),
            tls_port: free_port(),
            pki,
            server_tls,
            process: None,
            dir,
        };
        m.write_config()?;
        m.launch()?;
        Ok(m)
    }

    fn write_config(&self) -> Result<()> {
        let conf = format!(
            "# written by the GridEdge test fixture\n\
             user root\n\
             persistence true\n\
             persistence_location {data}/\n\
             log_dest stderr\n\
             log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
             connection_messages true\n\
             per_listener_settings true\n\
             \n\
             listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             \n\
             listener {tls_port} 127.0.0.1\n\
             allow_anonymous true\n\
             cafile {ca}\n\
             certfile {cert}\n\
             keyfile {key}\n\
             require_certificate true\n\
             use_identity_as_username true\n\
             use_username_as_clientid true\n\
             crlfile {crl}\n\
             acl_file {acl}\n",
            crl = self.pki.crl_file()?.display(),
            acl = crate::workspace_root()
                .join("deploy/mosquitto/gridedge.acl")
                .display(),
            data = self.dir.path().display(),
            port = self.port,
            tls_port = self.tls_port,
            ca = self.server_tls.ca_file.display(),
            cert = self.server_tls.cert_file.display(),
            key = self.server_tls.key_file.display(),
        );
        std::fs::write(self.dir.join("mosquitto.conf"), conf)?;
        Ok(())
    }

    fn launch(&mut self) -> Result<()> {
        let mut cmd = Command::new(MOSQUITTO);
        cmd.arg("-c").arg(self.dir.join("mosquitto.conf"));
        let process = ChildProcess::spawn("mosquitto", cmd, &self.dir.join("mosquitto.log"))?;
        let ready = wait_for_port(self.addr(), Duration::from_secs(10)).and_then(|_| {
            wait_for_port(
                SocketAddr::from(([127, 0, 0, 1], self.tls_port)),
                Duration::from_secs(10),
            )
        });
        if let Err(e) = ready {
            anyhow::bail!("mosquitto did not start: {e}\n{}", process.log_text());
        }
        self.process = Some(process);
        Ok(())
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// `mqtts://localhost:PORT` (the server certificate names localhost and 127.0.0.1).
    pub fn tls_url(&self) -> String {
        format!("mqtts://localhost:{}", self.tls_port)
    }

    /// Stops the broker as a crash would (SIGKILL); sessions persisted so far survive a restart.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Asks the broker to read its config again (SIGHUP): a new revocation list among it.
    pub fn reload(&self) -> Result<()> {
        if let Some(p) = &self.process {
            p.signal(libc::SIGHUP)?;
        }
        Ok(())
    }

    /// Freezes the broker (SIGSTOP), as an overloaded host would: the kernel still accepts
    /// connections and bytes for it, and it reads none of them until [`Self::resume`].
    pub fn pause(&self) -> Result<()> {
        if let Some(p) = &self.process {
            p.signal(libc::SIGSTOP)?;
        }
        Ok(())
    }

    /// Lets a paused broker run again (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        if let Some(p) = &self.process {
            p.signal(libc::SIGCONT)?;
        }
        Ok(())
    }

    /// Stops the broker cleanly (SIGTERM), so it saves its persistence file.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut p) = self.process.take() {
            p.signal(libc::SIGTERM)?;
            p.wait_timeout(Duration::from_secs(5))?;
        }
        Ok(())
    }

    /// Starts the broker again (after [`Self::kill`] or [`Self::stop`]) on the same ports and data.
    pub fn start_again(&mut self) -> Result<()> {
        anyhow::ensure!(self.process.is_none(), "mosquitto is still running");
        self.launch()
    }

    /// A clean stop and start on the same ports with the same data.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.start_again()
    }

    pub fn log_text(&self) -> String {
        self.process
            .as_ref()
            .map(ChildProcess::log_text)
            .unwrap_or_default()
    }
}

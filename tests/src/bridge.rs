//! The peer of the backbone benchmarks: an edge Mosquitto with persistence bridging QoS 1 to a
//! central Mosquitto, where a subscriber appends what it receives to a file and fsyncs.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::process::ChildProcess;
use crate::Result;

/// Mosquitto in the foreground on the config `conf`, written to `dir/NAME.conf`; its log in
/// `dir/NAME.log`.
pub fn mosquitto(dir: &Path, name: &str, conf: &str) -> Result<ChildProcess> {
    let path = dir.join(format!("{name}.conf"));
    std::fs::write(&path, conf)?;
    let mut cmd = Command::new(crate::mosquitto::MOSQUITTO);
    cmd.arg("-c").arg(&path);
    ChildProcess::spawn(name, cmd, &dir.join(format!("{name}.log")))
}

/// The central broker: plain listener on `port`, persistence in `db` (which must exist),
/// unlimited queues; `extra` lines appended (e.g. `autosave_interval 1\n`).
pub fn central_conf(port: u16, db: &Path, extra: &str) -> String {
    format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
         max_queued_messages 0\nmax_inflight_messages 1000\n{extra}",
        db.display()
    )
}

/// The edge broker: plain listener on `port`, persistence in `db` (which must exist) saved
/// every second, and a QoS 1 bridge with a persistent session to `central` for `events/#`;
/// `extra` lines before the bridge's.
pub fn edge_conf(port: u16, db: &Path, central: SocketAddr, extra: &str) -> String {
    format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
         autosave_interval 1\nmax_queued_messages 0\nmax_inflight_messages 1000\n{extra}\
         connection central\naddress {central}\ntopic events/# out 1\ncleansession false\n\
         notifications false\nrestart_timeout 1\nbridge_attempt_unsubscribe false\n",
        db.display()
    )
}

/// Config lines that keep Mosquitto started as root running as root: otherwise it switches to
/// the `mosquitto` user, which cannot write its persistence file into a private temporary
/// folder ("Error saving in-memory database … Permission denied"), and a restart finds
/// nothing saved.
pub const AS_ROOT: &str = "user root\n";

/// When the durable subscriber acknowledges a message to its broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriberAcks {
    /// On receipt, before it is written (rumqttc's automatic acknowledgement).
    OnReceipt,
    /// Only once it is written and fsynced: a subscriber that dies loses nothing it acknowledged.
    AfterSync,
}

/// A subscriber (client id `central-subscriber`, persistent session) on the central broker at
/// `port` that appends each message it receives on `events/#` to `out`, one a line, and fsyncs
/// at least every 1000 messages or 100 ms, counting in `received` what it has made durable.
/// Runs on a task of its own until the process ends.
pub async fn durable_subscriber(
    port: u16,
    out: std::fs::File,
    received: Arc<AtomicU64>,
    acks: SubscriberAcks,
) -> Result<()> {
    let mut opts = MqttOptions::new("central-subscriber", "127.0.0.1", port);
    opts.set_clean_session(false);
    opts.set_inflight(1000);
    opts.set_manual_acks(acks == SubscriberAcks::AfterSync);
    // Room for one acknowledgement per message the broker may have in flight to us.
    let (client, mut ev) = AsyncClient::new(opts, 10_000);
    client.subscribe("events/#", QoS::AtLeastOnce).await?;
    let mut out = std::io::BufWriter::new(out);
    let mut unsynced = Vec::new();
    let mut last_sync = Instant::now();
    tokio::spawn(async move {
        loop {
            let got = tokio::time::timeout(Duration::from_millis(100), ev.poll()).await;
            if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) = got {
                let _ = out.write_all(&p.payload);
                let _ = out.write_all(b"\n");
                unsynced.push(p);
            } else if let Ok(Err(_)) = got {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !unsynced.is_empty()
                && (unsynced.len() >= 1000 || last_sync.elapsed() > Duration::from_millis(100))
            {
                let _ = out.flush();
                let _ = out.get_ref().sync_data();
                received.fetch_add(unsynced.len() as u64, Ordering::Relaxed);
                for p in unsynced.drain(..) {
                    if acks == SubscriberAcks::AfterSync {
                        // Not acknowledged (channel full or closed): the broker sends it again.
                        let _ = client.try_ack(&p);
                    }
                }
                last_sync = Instant::now();
            }
        }
    });
    Ok(())
}

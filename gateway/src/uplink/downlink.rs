//! What the gateway believes of central: every message on its `ack`, `cmd` and `data` topics
//! must carry central's signature (over direction, gateway, channel, kind, sequence number,
//! time and payload), be addressed to this gateway, and be new — not older than
//! `uplink.downlink_max_age` on central's own clock (as its messages show it: a gateway whose
//! clock is wrong still hears central), and not a sequence number already taken. Anything
//! else is refused and counted by reason, whatever the broker or the network let through.
//!
//! Central numbers its messages with microseconds that only grow; messages of one channel may
//! arrive a little out of order (several of central's tasks publish), so each channel keeps the
//! numbers taken in the last [`WINDOW`] below its highest, and refuses anything older or
//! already taken. The highest number per channel is written to `<storage>/downlink.seq`
//! (every few seconds and at shutdown), so a restart does not reopen old numbers; the last
//! moments before a crash may be, and what they carry is harmless again (an ack deletes only
//! events in flight, statuses and invitations carry versions, bundles must be newer).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use firmware_config::ids::GatewayId;
use firmware_config::runtime::clock::PeerClock;
use firmware_config::runtime::signing::{DownlinkVerifier, SigningError};
use firmware_config::topics::Channel;
use firmware_config::wire::Envelope;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// How far below the highest number seen a message may still arrive (central's numbers are
/// microseconds: a minute).
pub const WINDOW: u64 = 60_000_000;

/// Why a downlink message was refused: the label of
/// `gridedge_gateway_downlink_refused_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unsigned,
    /// Signed by another key, or the signature does not hold.
    BadSignature,
    /// Central's, for another gateway.
    OtherGateway,
    /// Older than the downlink's maximum age (or from too far in the future).
    Stale,
    /// A sequence number already taken, or below the window.
    Replayed,
    /// Not a message central sends on that topic.
    WrongKind,
    /// An ack that names no batch in flight, or sequence numbers outside it.
    BadAck,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unsigned => "unsigned",
            Refusal::BadSignature => "bad_signature",
            Refusal::OtherGateway => "other_gateway",
            Refusal::Stale => "stale",
            Refusal::Replayed => "replayed",
            Refusal::WrongKind => "wrong_kind",
            Refusal::BadAck => "bad_ack",
        }
    }
}

/// The sequence numbers taken on one channel.
#[derive(Debug, Default, Clone)]
pub struct ReplayWindow {
    highest: u64,
    recent: BTreeSet<u64>,
}

impl ReplayWindow {
    fn starting_at(highest: u64) -> Self {
        Self {
            highest,
            recent: BTreeSet::new(),
        }
    }

    /// Takes `seq` if it is new: within the window below the highest and not taken before.
    pub fn take(&mut self, seq: u64) -> bool {
        if seq.saturating_add(WINDOW) <= self.highest || self.recent.contains(&seq) {
            return false;
        }
        self.recent.insert(seq);
        if seq > self.highest {
            self.highest = seq;
            let floor = self.highest.saturating_sub(WINDOW);
            self.recent = self.recent.split_off(&floor);
        }
        true
    }

    pub fn highest(&self) -> u64 {
        self.highest
    }
}

/// What `downlink.seq` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    ack: u64,
    cmd: u64,
    data: u64,
}

/// Checks every message from central.
pub struct DownlinkGuard {
    gateway: GatewayId,
    verifier: DownlinkVerifier,
    max_age: Duration,
    windows: [ReplayWindow; 3],
    path: PathBuf,
    dirty: bool,
    /// Central's clock, from its signed messages: ages are judged on it, so a gateway whose
    /// own clock is wrong (booted without one, stepped) still takes central's messages. Shared
    /// with what judges the times inside them (a bundle's issue time).
    central: CentralClock,
}

/// Central's clock as the gateway has seen it in central's signed messages.
pub type CentralClock = std::sync::Arc<std::sync::Mutex<PeerClock>>;

fn slot(channel: Channel) -> Option<usize> {
    match channel {
        Channel::Ack => Some(0),
        Channel::Cmd => Some(1),
        Channel::Data => Some(2),
        _ => None,
    }
}

impl DownlinkGuard {
    /// A guard for `gateway`, its numbers kept under `dir`.
    pub fn open(
        dir: &Path,
        gateway: GatewayId,
        verifier: DownlinkVerifier,
        max_age: Duration,
    ) -> Self {
        let path = dir.join("downlink.seq");
        let p: Persisted = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self {
            gateway,
            verifier,
            max_age,
            windows: [
                ReplayWindow::starting_at(p.ack),
                ReplayWindow::starting_at(p.cmd),
                ReplayWindow::starting_at(p.data),
            ],
            path,
            dirty: false,
            central: CentralClock::default(),
        }
    }

    /// Whether `env`, received on `channel`, is central's, for this gateway, and new at `now`.
    pub fn check(
        &mut self,
        channel: Channel,
        env: &Envelope,
        now: OffsetDateTime,
    ) -> Result<(), Refusal> {
        let i = slot(channel).ok_or(Refusal::WrongKind)?;
        self.verifier
            .verify(&self.gateway, channel, env)
            .map_err(|e| match e {
                SigningError::Unsigned => Refusal::Unsigned,
                SigningError::WrongGateway { .. } => Refusal::OtherGateway,
                _ => Refusal::BadSignature,
            })?;
        let central_now = {
            let mut central = self
                .central
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            central.observe(env.time, now);
            central.their_now(now)
        };
        let age = central_now - env.time;
        if age > self.max_age || -age > self.max_age {
            return Err(Refusal::Stale);
        }
        if !self.windows[i].take(env.seq) {
            return Err(Refusal::Replayed);
        }
        self.dirty = true;
        Ok(())
    }

    /// Central's clock as this guard sees it.
    pub fn central_clock(&self) -> CentralClock {
        self.central.clone()
    }

    /// Writes the highest numbers taken, if they changed.
    pub fn persist(&mut self) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let p = Persisted {
            ack: self.windows[0].highest(),
            cmd: self.windows[1].highest(),
            data: self.windows[2].highest(),
        };
        let bytes = serde_json::to_vec(&p).map_err(std::io::Error::other)?;
        firmware_config::durable::write(
            &self.path,
            &bytes,
            firmware_config::durable::Access::Default,
        )?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_config::bundle::{SigningKey, VerifyingKey};
    use firmware_config::runtime::signing::DownlinkSigner;
    use firmware_config::wire::{self, Ack, Message};

    #[test]
    fn a_window_takes_each_number_once_and_nothing_below_it() {
        let mut w = ReplayWindow::default();
        assert!(w.take(100_000_000));
        assert!(!w.take(100_000_000), "taken");
        assert!(w.take(99_000_000), "a little late, within the window");
        assert!(!w.take(99_000_000));
        assert!(w.take(100_000_001));
        assert!(!w.take(40_000_000), "below the window");
        assert!(w.take(200_000_000));
        assert!(!w.take(100_000_002), "the window moved on");
        assert_eq!(
            w.recent.len(),
            1,
            "old numbers are forgotten: {:?}",
            w.recent
        );
    }

    struct Central {
        signer: DownlinkSigner,
        next: u64,
    }

    impl Central {
        fn send(&mut self, gateway: &str, channel: Channel, at: OffsetDateTime) -> Envelope {
            self.next += 1;
            let mut env = Envelope::new(
                GatewayId::new(gateway).unwrap(),
                self.next,
                Message::Ack(Ack {
                    watermark: 1,
                    ranges: vec![(1, 1)],
                    batch: Some(1),
                }),
            );
            env.time = at;
            wire::decode(&self.signer.encode(channel, &env).unwrap()).unwrap()
        }
    }

    fn setup(dir: &Path) -> (Central, DownlinkGuard) {
        let (key, _) = SigningKey::generate().unwrap();
        let public = VerifyingKey::from_pem(&key.public_pem()).unwrap();
        let guard = DownlinkGuard::open(
            dir,
            GatewayId::new("gw-1").unwrap(),
            DownlinkVerifier::new(public),
            Duration::from_secs(3600),
        );
        (
            Central {
                signer: DownlinkSigner::new(key),
                next: 1_000_000_000,
            },
            guard,
        )
    }

    #[test]
    fn a_gateway_whose_clock_is_years_off_still_hears_central_and_refuses_what_is_old() {
        let dir = tempfile::tempdir().unwrap();
        let (mut central, mut guard) = setup(dir.path());
        let real = OffsetDateTime::now_utc();
        // Booted without its clock: 1970.
        let ours = OffsetDateTime::UNIX_EPOCH + time::Duration::days(3);
        let s = time::Duration::seconds;
        let ack = central.send("gw-1", Channel::Ack, real);
        assert_eq!(guard.check(Channel::Ack, &ack, ours), Ok(()));
        let next = central.send("gw-1", Channel::Ack, real + s(1));
        assert_eq!(guard.check(Channel::Ack, &next, ours + s(1)), Ok(()));
        let old = central.send("gw-1", Channel::Ack, real - time::Duration::days(30));
        assert_eq!(
            guard.check(Channel::Ack, &old, ours + s(2)),
            Err(Refusal::Stale)
        );
    }

    #[test]
    fn only_centrals_new_messages_for_this_gateway_pass() {
        let dir = tempfile::tempdir().unwrap();
        let (mut central, mut guard) = setup(dir.path());
        let now = OffsetDateTime::now_utc();
        let ack = central.send("gw-1", Channel::Ack, now);
        assert_eq!(guard.check(Channel::Ack, &ack, now), Ok(()));
        assert_eq!(guard.check(Channel::Ack, &ack, now), Err(Refusal::Replayed));
        // Moved to another topic: the signature covers the channel.
        let again = central.send("gw-1", Channel::Ack, now);
        assert_eq!(
            guard.check(Channel::Cmd, &again, now),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            guard.check(Channel::Status, &again, now),
            Err(Refusal::WrongKind)
        );
        let other = central.send("gw-2", Channel::Ack, now);
        assert_eq!(
            guard.check(Channel::Ack, &other, now),
            Err(Refusal::OtherGateway)
        );
        let old = central.send("gw-1", Channel::Ack, now - time::Duration::hours(2));
        assert_eq!(guard.check(Channel::Ack, &old, now), Err(Refusal::Stale));
        let mut unsigned = central.send("gw-1", Channel::Ack, now);
        unsigned.sig = None;
        assert_eq!(
            guard.check(Channel::Ack, &unsigned, now),
            Err(Refusal::Unsigned)
        );
        let (mut rogue, _) = setup(dir.path());
        let forged = rogue.send("gw-1", Channel::Ack, now);
        assert_eq!(
            guard.check(Channel::Ack, &forged, now),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn a_restart_does_not_reopen_the_numbers_taken() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = SigningKey::generate().unwrap();
        let public = VerifyingKey::from_pem(&key.public_pem()).unwrap();
        let mut central = Central {
            signer: DownlinkSigner::new(key),
            next: 5_000_000_000,
        };
        let open = || {
            DownlinkGuard::open(
                dir.path(),
                GatewayId::new("gw-1").unwrap(),
                DownlinkVerifier::new(public.clone()),
                Duration::from_secs(3600),
            )
        };
        let now = OffsetDateTime::now_utc();
        let early = central.send("gw-1", Channel::Cmd, now);
        central.next += 2 * WINDOW;
        let late = central.send("gw-1", Channel::Cmd, now);
        let mut guard = open();
        assert_eq!(guard.check(Channel::Cmd, &early, now), Ok(()));
        assert_eq!(guard.check(Channel::Cmd, &late, now), Ok(()));
        guard.persist().unwrap();
        let mut guard = open();
        assert_eq!(
            guard.check(Channel::Cmd, &early, now),
            Err(Refusal::Replayed)
        );
        // The ack channel has its own numbers.
        let ack = central.send("gw-1", Channel::Ack, now);
        assert_eq!(guard.check(Channel::Ack, &ack, now), Ok(()));
    }
}

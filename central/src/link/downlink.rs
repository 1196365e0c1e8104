//! What central sends gateways, sealed: every message on a gateway's `ack`, `cmd` and `data`
//! topics carries central's signature over its direction, gateway, channel, kind, sequence
//! number, time and payload, and a sequence number that only grows, so that a gateway can
//! refuse forgeries and replays whatever the broker or the network let through.

use std::sync::atomic::{AtomicU64, Ordering};

use firmware_config::bundle::SigningKey;
use firmware_config::ids::GatewayId;
use firmware_config::runtime::clock::Clock;
use firmware_config::runtime::signing::DownlinkSigner;
use firmware_config::topics::Channel;
use firmware_config::wire::{Envelope, Message, WireError};

/// Central's sealing of downlink messages; shared by the link, commands and replication.
pub struct Downlink {
    signer: DownlinkSigner,
    seq: DownlinkSeq,
    /// Stamps every message (gateways refuse one older than their `downlink_max_age`).
    clock: Clock,
}

impl Downlink {
    pub fn new(key: SigningKey, clock: Clock) -> Self {
        Self {
            signer: DownlinkSigner::new(key),
            seq: DownlinkSeq::default(),
            clock,
        }
    }

    /// `message` for `gateway` on `channel`: enveloped with the next sequence number, signed,
    /// encoded.
    pub fn seal(
        &self,
        gateway: &GatewayId,
        channel: Channel,
        message: Message,
    ) -> Result<Vec<u8>, WireError> {
        let seq = self.seq.next(self.clock.unix_micros());
        let env = Envelope::new(gateway.clone(), seq, message).at(self.clock.now_utc());
        self.signer.encode(channel, &env)
    }
}

/// Downlink sequence numbers: microseconds since the epoch, or one more than the last when
/// that is higher — strictly increasing in this process, and above what an earlier run of
/// central handed out as long as the clock does not go back.
#[derive(Debug, Default)]
pub struct DownlinkSeq {
    last: AtomicU64,
}

impl DownlinkSeq {
    /// The next number, given the time now in Unix microseconds.
    pub fn next(&self, now: u64) -> u64 {
        let mut cur = self.last.load(Ordering::Relaxed);
        loop {
            let next = now.max(cur + 1);
            match self
                .last
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => cur = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_only_grow_across_threads() {
        let seq = std::sync::Arc::new(DownlinkSeq::default());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let seq = seq.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .map(|_| seq.next(Clock::system().unix_micros()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let runs: Vec<Vec<u64>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for run in &runs {
            assert!(
                run.windows(2).all(|w| w[0] < w[1]),
                "in order within a thread"
            );
        }
        let mut all: Vec<u64> = runs.into_iter().flatten().collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "no number twice");
        let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000) as u64;
        assert!(
            all[0] + 60_000_000 > now,
            "close to the clock in microseconds"
        );
    }
}

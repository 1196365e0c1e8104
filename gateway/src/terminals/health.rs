//! The health state machine of one terminal: pure logic over observations and an injected
//! clock (`now` is always passed in), so tests decide what time it is and never sleep.
//!
//! - **Hysteresis**: `misses_before_offline` failures in a row make a terminal offline;
//!   `successes_before_online` successes in a row bring an offline terminal back. A terminal
//!   never heard from is `unknown` and goes online at its first success (quietly: the periodic
//!   summary tells central; only changes after that are events).
//! - **Degraded**: the terminal answers but a peripheral or a threshold fails.
//! - **Flapping**: `flap_changes` changes within `flap_window` raise one flapping alert; while
//!   it flaps, its state changes are kept but not reported; once it has been steady for a whole
//!   window, flapping clears and its current state is reported once.

use std::collections::VecDeque;
use std::time::Duration;

pub use firmware_config::kinds::TerminalState;
use firmware_config::runtime::clock::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub misses_before_offline: u32,
    pub successes_before_online: u32,
    pub flap_window: Duration,
    pub flap_changes: u32,
}

/// What was learned about a terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// It answered; `problems` lists failing peripherals and thresholds (empty: all well).
    Answered { problems: Vec<String> },
    /// A heartbeat did not come in time, or a probe failed.
    Missed { reason: String },
}

/// Something central must be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    State {
        from: TerminalState,
        to: TerminalState,
        reasons: Vec<String>,
    },
    FlappingRaised {
        state: TerminalState,
        changes: usize,
    },
    FlappingCleared {
        state: TerminalState,
        reasons: Vec<String>,
    },
}

#[derive(Debug, Clone)]
pub struct TerminalHealth {
    policy: Policy,
    state: TerminalState,
    since: Instant,
    successes: u32,
    misses: u32,
    /// Why the terminal is in its state (failing peripherals, the last miss).
    reasons: Vec<String>,
    /// When the state changed, within the flap window.
    changes: VecDeque<Instant>,
    flapping: bool,
    /// The state central was last told.
    reported: TerminalState,
    last_answer: Option<Instant>,
}

impl TerminalHealth {
    pub fn new(policy: Policy, now: Instant) -> Self {
        Self {
            policy,
            state: TerminalState::Unknown,
            since: now,
            successes: 0,
            misses: 0,
            reasons: Vec::new(),
            changes: VecDeque::new(),
            flapping: false,
            reported: TerminalState::Unknown,
            last_answer: None,
        }
    }

    pub fn state(&self) -> TerminalState {
        self.state
    }

    pub fn since(&self) -> Instant {
        self.since
    }

    pub fn flapping(&self) -> bool {
        self.flapping
    }

    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }

    pub fn last_answer(&self) -> Option<Instant> {
        self.last_answer
    }

    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    pub fn observe(&mut self, now: Instant, obs: Observation) -> Vec<Change> {
        let next = match obs {
            Observation::Answered { problems } => {
                self.last_answer = Some(now);
                self.misses = 0;
                self.successes = self.successes.saturating_add(1);
                let target = if problems.is_empty() {
                    TerminalState::Online
                } else {
                    TerminalState::Degraded
                };
                let held = self.state == TerminalState::Offline
                    && self.successes < self.policy.successes_before_online;
                if !held {
                    self.reasons = problems;
                }
                (!held).then_some(target)
            }
            Observation::Missed { reason } => {
                self.successes = 0;
                self.misses = self.misses.saturating_add(1);
                if self.misses >= self.policy.misses_before_offline {
                    if self.state != TerminalState::Offline {
                        self.reasons = vec![reason];
                    }
                    Some(TerminalState::Offline)
                } else {
                    None
                }
            }
        };
        let mut out = Vec::new();
        if let Some(to) = next {
            self.enter(now, to, &mut out);
        }
        out.extend(self.tick(now));
        out
    }

    fn enter(&mut self, now: Instant, to: TerminalState, out: &mut Vec<Change>) {
        if to == self.state {
            return;
        }
        let from = self.state;
        self.state = to;
        self.since = now;
        // Leaving `unknown` is learning, not a change of the terminal.
        if from != TerminalState::Unknown {
            self.changes.push_back(now);
        }
        self.forget_old_changes(now);
        if !self.flapping && self.changes.len() >= self.policy.flap_changes as usize {
            self.flapping = true;
            out.push(Change::FlappingRaised {
                state: to,
                changes: self.changes.len(),
            });
            return;
        }
        // A terminal first heard from and well is news for the periodic summary, not an event
        // (a restarted gateway would otherwise send one per terminal).
        if from == TerminalState::Unknown && to == TerminalState::Online {
            self.reported = to;
            return;
        }
        if !self.flapping && to != self.reported {
            out.push(Change::State {
                from: self.reported,
                to,
                reasons: self.reasons.clone(),
            });
            self.reported = to;
        }
    }

    fn forget_old_changes(&mut self, now: Instant) {
        while let Some(first) = self.changes.front() {
            if now.saturating_duration_since(*first) > self.policy.flap_window {
                self.changes.pop_front();
            } else {
                break;
            }
        }
    }

    /// Time passing: clears flapping once the terminal has been steady for a whole window.
    pub fn tick(&mut self, now: Instant) -> Vec<Change> {
        if !self.flapping || now.saturating_duration_since(self.since) < self.policy.flap_window {
            return Vec::new();
        }
        self.flapping = false;
        self.forget_old_changes(now);
        self.reported = self.state;
        vec![Change::FlappingCleared {
            state: self.state,
            reasons: self.reasons.clone(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            misses_before_offline: 3,
            successes_before_online: 2,
            flap_window: Duration::from_secs(600),
            flap_changes: 4,
        }
    }

    fn ok() -> Observation {
        Observation::Answered {
            problems: Vec::new(),
        }
    }

    fn miss() -> Observation {
        Observation::Missed {
            reason: "no heartbeat".into(),
        }
    }

    fn states(changes: &[Change]) -> Vec<(TerminalState, TerminalState)> {
        changes
            .iter()
            .filter_map(|c| match c {
                Change::State { from, to, .. } => Some((*from, *to)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn offline_after_n_misses_and_back_after_m_successes() {
        use TerminalState::*;
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut h = TerminalHealth::new(policy(), t0);
        assert!(h.observe(s(1), ok()).is_empty());
        assert_eq!(h.state(), Online);
        assert!(h.observe(s(2), miss()).is_empty());
        assert!(h.observe(s(3), miss()).is_empty());
        assert_eq!(states(&h.observe(s(4), miss())), [(Online, Offline)]);
        assert_eq!(h.reasons(), ["no heartbeat"]);
        // More misses: still one change.
        assert!(h.observe(s(5), miss()).is_empty());
        // One success is not enough; a miss in between starts the count again.
        assert!(h.observe(s(6), ok()).is_empty());
        assert!(h.observe(s(7), miss()).is_empty());
        assert!(h.observe(s(8), ok()).is_empty());
        assert_eq!(states(&h.observe(s(9), ok())), [(Offline, Online)]);
        assert_eq!(h.state(), Online);
    }

    #[test]
    fn a_success_with_problems_is_degraded_and_clears_at_once() {
        use TerminalState::*;
        let t0 = Instant::now();
        let mut h = TerminalHealth::new(policy(), t0);
        h.observe(t0, ok());
        let bad = Observation::Answered {
            problems: vec!["printer: paper out".into()],
        };
        let c = h.observe(t0 + Duration::from_secs(1), bad.clone());
        assert_eq!(
            c,
            [Change::State {
                from: Online,
                to: Degraded,
                reasons: vec!["printer: paper out".into()]
            }]
        );
        assert!(h.observe(t0 + Duration::from_secs(2), bad).is_empty());
        assert_eq!(
            states(&h.observe(t0 + Duration::from_secs(3), ok())),
            [(Degraded, Online)]
        );
    }

    #[test]
    fn never_heard_from_goes_offline_after_the_misses() {
        let t0 = Instant::now();
        let mut h = TerminalHealth::new(policy(), t0);
        h.observe(t0, miss());
        h.observe(t0, miss());
        assert_eq!(
            states(&h.observe(t0, miss())),
            [(TerminalState::Unknown, TerminalState::Offline)]
        );
    }

    #[test]
    fn flapping_raises_one_alert_then_clears_with_the_state_once_steady() {
        use TerminalState::*;
        let p = Policy {
            misses_before_offline: 1,
            successes_before_online: 1,
            ..policy()
        };
        let t0 = Instant::now();
        let mut h = TerminalHealth::new(p, t0);
        h.observe(t0, ok());
        let mut all = Vec::new();
        // Up and down every 10 s for 10 minutes: 60 changes.
        for i in 1..=60u64 {
            let obs = if i % 2 == 1 { miss() } else { ok() };
            all.extend(h.observe(t0 + Duration::from_secs(10 * i), obs));
        }
        let raised = all
            .iter()
            .filter(|c| matches!(c, Change::FlappingRaised { .. }))
            .count();
        assert_eq!(raised, 1, "{all:?}");
        // The three changes before flapping was detected were reported; none after.
        assert_eq!(states(&all).len(), 3, "{all:?}");
        assert!(h.flapping());
        // It ends online and stays so: flapping clears a window after its last change.
        let last = t0 + Duration::from_secs(600);
        assert!(h.tick(last + Duration::from_secs(599)).is_empty());
        assert_eq!(
            h.tick(last + Duration::from_secs(600)),
            [Change::FlappingCleared {
                state: Online,
                reasons: vec![]
            }]
        );
        assert!(!h.flapping());
        assert!(h.tick(last + Duration::from_secs(700)).is_empty());
        // A single change later is an ordinary change again.
        assert_eq!(
            states(&h.observe(last + Duration::from_secs(800), miss())),
            [(Online, Offline)]
        );
    }

    #[test]
    fn changes_spread_wider_than_the_window_are_not_flapping() {
        let p = Policy {
            misses_before_offline: 1,
            successes_before_online: 1,
            ..policy()
        };
        let t0 = Instant::now();
        let mut h = TerminalHealth::new(p, t0);
        h.observe(t0, ok());
        for i in 1..=20u64 {
            let obs = if i % 2 == 1 { miss() } else { ok() };
            let c = h.observe(t0 + Duration::from_secs(250 * i), obs);
            assert_eq!(states(&c).len(), 1, "change {i}: {c:?}");
        }
        assert!(!h.flapping());
    }
}

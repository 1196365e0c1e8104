//! Which incoming facts are alerts: events from gateways (cameras, terminals, configuration,
//! the outbox, the centre's own systems), a gateway's presence, and its outbox as reported.
//! Each becomes an [`Observation`] raising or clearing one rule of one originator.

use std::time::Duration;

use firmware_config::kinds::{CameraState, Kind, SensingRule, TerminalState};
use firmware_config::wire::{Event, EventClass, OutboxReport};
use serde_json::{json, Value};

use super::engine::{Observation, Severity};

/// How long a device condition must last before it is an alert (a camera reconnecting, a
/// terminal rebooting).
pub const DEVICE_HOLD_DOWN: Duration = Duration::from_secs(10);
/// Events waiting at a gateway while nothing of its reached central for this long: an alert.
pub const BACKLOG_LIMIT: Duration = Duration::from_secs(600);

fn text<'a>(p: &'a Value, k: &str) -> &'a str {
    p.get(k).and_then(Value::as_str).unwrap_or_default()
}

struct Make<'a> {
    gateway: &'a str,
    payload: &'a Value,
}

impl Make<'_> {
    fn device(
        &self,
        (kind, id): (&str, &str),
        rule: &str,
        raised: bool,
        severity: Severity,
        title: String,
        hold_down: Duration,
    ) -> Observation {
        Observation {
            originator: format!("{}/{kind}/{id}", self.gateway),
            gateway: self.gateway.to_owned(),
            rule: rule.to_owned(),
            raised,
            severity,
            title,
            detail: self.payload.clone(),
            hold_down,
        }
    }

    fn gateway(&self, rule: &str, raised: bool, severity: Severity, title: String) -> Observation {
        Observation {
            originator: self.gateway.to_owned(),
            gateway: self.gateway.to_owned(),
            rule: rule.to_owned(),
            raised,
            severity,
            title,
            detail: self.payload.clone(),
            hold_down: Duration::ZERO,
        }
    }
}

/// The observations one stored event makes (none for most telemetry).
pub fn from_event(gateway: &str, e: &Event) -> Vec<Observation> {
    // A device kind is the gateway's word only: a source cannot raise or clear one.
    if !e.from_gateway() && firmware_config::kinds::is_gateway_kind(&e.kind) {
        return Vec::new();
    }
    let payload: Value = serde_json::from_str(e.payload.get()).unwrap_or(Value::Null);
    let m = Make {
        gateway,
        payload: &payload,
    };
    let kind = e.kind.as_str();
    let camera = text(&payload, "camera");
    let terminal = text(&payload, "terminal");
    let name = |id: &str| {
        let n = text(&payload, "name");
        if n.is_empty() {
            id.to_owned()
        } else {
            format!("{n}（{id}）")
        }
    };
    use Severity::*;
    match Kind::parse(kind) {
        // Camera health: offline, stalled and unsupported are one condition; unauthorized its own.
        Kind::Camera(CameraState::Offline | CameraState::Stalled | CameraState::Unsupported)
            if !camera.is_empty() =>
        {
            vec![m.device(
                ("camera", camera),
                "camera.offline",
                true,
                Major,
                format!("摄像头离线 {}", name(camera)),
                DEVICE_HOLD_DOWN,
            )]
        }
        Kind::Camera(CameraState::Unauthorized) if !camera.is_empty() => vec![m.device(
            ("camera", camera),
            "camera.unauthorized",
            true,
            Major,
            format!("摄像头鉴权失败 {}", name(camera)),
            Duration::ZERO,
        )],
        Kind::Camera(CameraState::Streaming | CameraState::Disabled) if !camera.is_empty() => vec![
            m.device(
                ("camera", camera),
                "camera.offline",
                false,
                Major,
                String::new(),
                DEVICE_HOLD_DOWN,
            ),
            m.device(
                ("camera", camera),
                "camera.unauthorized",
                false,
                Major,
                String::new(),
                Duration::ZERO,
            ),
        ],
        // Sensing: tamper (covered, moved), a frozen picture, motion in a zone.
        Kind::Sensing { rule, cleared } if !camera.is_empty() => {
            let raised = !cleared;
            let (severity, label) = match rule {
                SensingRule::Covered => (Critical, "摄像头遮挡"),
                SensingRule::Moved => (Critical, "摄像头移位"),
                SensingRule::Frozen => (Major, "画面冻结"),
                SensingRule::Motion => (Minor, "区域入侵"),
            };
            let rule = format!("camera.{}", rule.as_str());
            let zone = text(&payload, "zone");
            let (rule, title) = if zone.is_empty() {
                (rule, format!("{label} {}", name(camera)))
            } else {
                (
                    format!("{rule}:{zone}"),
                    format!("{label} {} · {zone}", name(camera)),
                )
            };
            vec![m.device(
                ("camera", camera),
                &rule,
                raised,
                severity,
                title,
                Duration::ZERO,
            )]
        }
        // Any other camera kind (connecting, one this build does not know) says nothing.
        Kind::Camera(_) | Kind::Other(_) if kind.starts_with("camera.") && !camera.is_empty() => {
            Vec::new()
        }
        // A terminal's state raises the rule of that state and clears the other.
        Kind::Terminal(
            state @ (TerminalState::Offline | TerminalState::Degraded | TerminalState::Online),
        ) if !terminal.is_empty() => {
            vec![
                m.device(
                    ("terminal", terminal),
                    "terminal.offline",
                    state == TerminalState::Offline,
                    Major,
                    format!("终端离线 {}", name(terminal)),
                    DEVICE_HOLD_DOWN,
                ),
                m.device(
                    ("terminal", terminal),
                    "terminal.degraded",
                    state == TerminalState::Degraded,
                    Minor,
                    format!("终端故障 {}", name(terminal)),
                    DEVICE_HOLD_DOWN,
                ),
            ]
        }
        Kind::TerminalFlapping { cleared } if !terminal.is_empty() => vec![m.device(
            ("terminal", terminal),
            "terminal.flapping",
            !cleared,
            Minor,
            format!("终端状态频繁变化 {}", name(terminal)),
            Duration::ZERO,
        )],
        // A bundle applied: what was refused or rolled back for that target is over.
        Kind::ConfigApplied => {
            let make = |rule: &str| match payload
                .get("target")
                .and_then(|t| t.get("terminal"))
                .and_then(Value::as_str)
            {
                Some(t) => m.device(
                    ("terminal", t),
                    rule,
                    false,
                    Major,
                    String::new(),
                    Duration::ZERO,
                ),
                None => m.gateway(rule, false, Major, String::new()),
            };
            vec![make("config.refused"), make("config.rolled_back")]
        }
        parsed @ (Kind::ConfigRefused | Kind::ConfigRolledBack) => {
            let target = payload.get("target");
            let title = if parsed == Kind::ConfigRefused {
                "配置被拒绝"
            } else {
                "配置已回滚"
            };
            match target
                .and_then(|t| t.get("terminal"))
                .and_then(Value::as_str)
            {
                Some(t) => vec![m.device(
                    ("terminal", t),
                    kind,
                    true,
                    Major,
                    format!("{title} {t}"),
                    Duration::ZERO,
                )],
                None => vec![m.gateway(kind, true, Major, format!("{title} 网关 {gateway}"))],
            }
        }
        Kind::OutboxQuarantined => {
            vec![m.gateway(
                kind,
                true,
                Critical,
                format!("网关存储损坏已隔离 {gateway}"),
            )]
        }
        // Any other alert-class event (door forced, smoke) is an alert of its source: the
        // event source that posted it (one alert per source and kind, whatever its payload
        // says), or what the payload names.
        _ if e.class == EventClass::Alert => {
            let named = ["source", "door", "device"]
                .iter()
                .map(|k| text(&payload, k))
                .find(|s| !s.is_empty());
            let (source, title) = match (&e.source, named) {
                (Some(src), Some(what)) => (src.as_str(), format!("{kind} {src}: {what}")),
                (Some(src), None) => (src.as_str(), format!("{kind} {src}")),
                (None, what) => {
                    let what = what.unwrap_or("centre");
                    (what, format!("{kind} {what}"))
                }
            };
            vec![m.device(("source", source), kind, true, Major, title, Duration::ZERO)]
        }
        _ => Vec::new(),
    }
}

/// A resident's case against its deadline: the working days it was given when registered, or
/// `fallback` after it came for one without. `Some` when overdue, or no longer open (to clear
/// it).
pub fn case_overdue(
    c: &crate::cases::Case,
    fallback: Duration,
    now: time::OffsetDateTime,
) -> Option<Observation> {
    let handled = !c.is_open();
    let overdue = c.is_overdue(fallback, now);
    if !overdue && !handled {
        return None;
    }
    let deadline = c.deadline(fallback);
    let limit = (deadline - c.created).whole_seconds().max(0) as u64;
    let limit = Duration::from_secs(limit);
    let title = c.submission["title"].as_str().unwrap_or_default();
    let payload = json!({
        "receipt": c.receipt, "status": c.status, "station": c.station,
        "limit_hours": limit.as_secs() / 3600, "created": c.created.unix_timestamp(),
        "due": deadline.unix_timestamp(), "assignee": c.assignee, "supervised": c.supervised,
    });
    Some(
        Make {
            gateway: &c.gateway,
            payload: &payload,
        }
        .device(
            ("case", &c.receipt),
            "case.overdue",
            overdue,
            Severity::Major,
            format!("诉求超时未办结 {} {title}", c.receipt),
            Duration::ZERO,
        ),
    )
}

/// A gateway went offline (its last will, or silence) or came back.
pub fn gateway_presence(gateway: &str, online: bool, why: &str) -> Observation {
    let payload = json!({ "why": why });
    Make {
        gateway,
        payload: &payload,
    }
    .gateway(
        "gateway.offline",
        !online,
        Severity::Critical,
        format!("网关离线 {gateway}"),
    )
}

/// A gateway's certificate expires within this: time to renew it (`fwcfg certs renew`).
pub const CERTIFICATE_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// A gateway's client certificate, as its health report shows it: an alert while it expires
/// within [`CERTIFICATE_WARNING`] (critical within a day), cleared once it is renewed.
pub fn certificate(
    gateway: &str,
    expires: time::OffsetDateTime,
    now: time::OffsetDateTime,
) -> Observation {
    let left = expires - now;
    let payload = json!({ "expires": expires.unix_timestamp(), "days_left": left.whole_days() });
    let severity = if left < time::Duration::days(1) {
        Severity::Critical
    } else {
        Severity::Major
    };
    Make {
        gateway,
        payload: &payload,
    }
    .gateway(
        "gateway.certificate_expiring",
        left < time::Duration::try_from(CERTIFICATE_WARNING).unwrap_or(time::Duration::ZERO),
        severity,
        format!("网关证书 {} 天后到期 {gateway}", left.whole_days().max(0)),
    )
}

/// A gateway's clock as its messages show it: further than `max` from central's either way.
pub fn clock(gateway: &str, offset_ms: i64, max: Duration) -> Observation {
    let payload = json!({ "offset_ms": offset_ms });
    let off = Duration::from_millis(offset_ms.unsigned_abs());
    let way = if offset_ms < 0 { "慢" } else { "快" };
    Make {
        gateway,
        payload: &payload,
    }
    .gateway(
        "gateway.clock_offset",
        off > max,
        Severity::Minor,
        format!("网关时钟{way} {} 秒 {gateway}", off.as_secs()),
    )
}

/// A gateway's outbox as its health report shows it: evictions since the last report, and
/// events waiting while nothing from it has been stored for `stalled_for`.
pub fn outbox(
    gateway: &str,
    o: &OutboxReport,
    evicted_before: u64,
    stalled_for: Duration,
) -> Vec<Observation> {
    let evicted: u64 = o.evicted.values().sum();
    let payload =
        json!({ "evicted": evicted, "pending": o.pending, "stalled_secs": stalled_for.as_secs() });
    let m = Make {
        gateway,
        payload: &payload,
    };
    let mut out = Vec::new();
    if evicted > evicted_before {
        out.push(m.gateway(
            "gateway.evictions",
            true,
            Severity::Major,
            format!(
                "网关存储已满，丢弃 {} 条事件 {gateway}",
                evicted - evicted_before
            ),
        ));
    }
    if let Some(d) = &o.disk {
        out.push(m.gateway(
            "gateway.disk_full",
            d.full || d.store_stopped,
            Severity::Major,
            format!(
                "网关磁盘已满（剩余 {} MiB），告警与办件暂不受理 {gateway}",
                d.free_bytes >> 20
            ),
        ));
    }
    out.push(m.gateway(
        "gateway.backlog",
        o.pending > 0 && stalled_for > BACKLOG_LIMIT,
        Severity::Minor,
        format!(
            "网关积压事件超过 {} 分钟未上送 {gateway}",
            BACKLOG_LIMIT.as_secs() / 60
        ),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(class: EventClass, kind: &str, payload: Value) -> Event {
        Event {
            seq: 1,
            class,
            kind: kind.into(),
            time: time::OffsetDateTime::UNIX_EPOCH,
            payload: serde_json::value::to_raw_value(&payload).unwrap(),
            source: None,
        }
    }

    #[test]
    fn events_become_the_rules_of_their_devices() {
        let of = |class, kind, p| from_event("gw-1", &event(class, kind, p));
        let o = of(
            EventClass::Alert,
            "camera.stalled",
            json!({"camera": "hall", "name": "大厅"}),
        );
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].key(), "gw-1/camera/hall#camera.offline");
        assert!(o[0].raised && o[0].title.contains("大厅（hall）"));
        let back = of(
            EventClass::Health,
            "camera.streaming",
            json!({"camera": "hall"}),
        );
        assert!(back.iter().all(|o| !o.raised) && back.len() == 2);
        let motion = of(
            EventClass::Alert,
            "camera.motion",
            json!({"camera": "hall", "zone": "counter"}),
        );
        assert_eq!(motion[0].key(), "gw-1/camera/hall#camera.motion:counter");
        let cleared = of(
            EventClass::Health,
            "camera.motion.cleared",
            json!({"camera": "hall", "zone": "counter"}),
        );
        assert_eq!(
            (cleared[0].key(), cleared[0].raised),
            (motion[0].key(), false)
        );
        let covered = of(
            EventClass::Alert,
            "camera.covered",
            json!({"camera": "hall"}),
        );
        assert_eq!(covered[0].severity, Severity::Critical);
        let t = of(
            EventClass::Alert,
            "terminal.offline",
            json!({"terminal": "kiosk-1"}),
        );
        assert_eq!(t[0].key(), "gw-1/terminal/kiosk-1#terminal.offline");
        assert_eq!((t[0].raised, t[1].raised), (true, false));
        let d = of(
            EventClass::Alert,
            "terminal.degraded",
            json!({"terminal": "kiosk-1"}),
        );
        assert_eq!((d[0].raised, d[1].raised), (false, true));
        let up = of(
            EventClass::Health,
            "terminal.online",
            json!({"terminal": "kiosk-1"}),
        );
        assert!(up.iter().all(|o| !o.raised) && up.len() == 2);
        let door = of(
            EventClass::Alert,
            "door.forced",
            json!({"door": "archive room"}),
        );
        assert_eq!(door[0].key(), "gw-1/source/archive room#door.forced");
        let refused = of(
            EventClass::Alert,
            "config.refused",
            json!({"target": {"gateway": "gw-1"}}),
        );
        assert_eq!(refused[0].key(), "gw-1#config.refused");
        let applied = of(
            EventClass::Alert,
            "config.applied",
            json!({"target": {"gateway": "gw-1"}}),
        );
        assert!(applied.iter().all(|o| !o.raised) && applied[0].key() == refused[0].key());
        assert!(of(EventClass::Telemetry, "x", json!({})).is_empty());
        assert!(of(EventClass::Health, "camera.streaming", json!({})).is_empty());
    }

    #[test]
    fn a_certificate_near_its_end_is_an_alert_until_renewed() {
        let now = time::OffsetDateTime::now_utc();
        let soon = certificate("gw-1", now + time::Duration::days(10), now);
        assert!(soon.raised && soon.key() == "gw-1#gateway.certificate_expiring");
        assert!(!certificate("gw-1", now + time::Duration::days(300), now).raised);
        assert_eq!(
            certificate("gw-1", now + time::Duration::hours(3), now).severity,
            Severity::Critical
        );
    }

    #[test]
    fn a_source_raises_alerts_of_its_own_and_never_a_devices() {
        let from_source = |kind: &str, payload: Value| {
            let mut e = event(EventClass::Alert, kind, payload);
            e.source = Some("door-access".into());
            from_event("gw-1", &e)
        };
        // A forged clear of a camera's tamper alert, a faked terminal state, a fake
        // submission: nothing.
        for kind in [
            "camera.covered.cleared",
            "camera.covered",
            "terminal.offline",
            "config.applied",
            "gateway.outbox_quarantined",
        ] {
            assert!(
                from_source(kind, json!({"camera": "hall", "terminal": "kiosk-1"})).is_empty(),
                "{kind}"
            );
        }
        // Its own kinds are alerts of the source, whatever the payload names.
        let door = from_source("door.forced", json!({"door": "archive room"}));
        assert_eq!(door[0].key(), "gw-1/source/door-access#door.forced");
        let other = from_source("door.forced", json!({"source": "camera/hall"}));
        assert_eq!(other[0].key(), door[0].key());
    }

    #[test]
    fn a_case_is_overdue_after_its_deadline_and_cleared_when_handled() {
        let t0 = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let mut c = crate::cases::Case {
            station: Some("11019900100001002".into()),
            ..crate::cases::Case::registered(
                "gw-1-000007",
                "gw-1",
                json!({"category": "report", "title": "路灯不亮"}),
                t0,
            )
        };
        let day = Duration::from_secs(24 * 3600);
        // Without a deadline of its own: the fallback after it came.
        assert!(case_overdue(&c, day, t0 + time::Duration::hours(23)).is_none());
        let o = case_overdue(&c, day, t0 + time::Duration::hours(25)).unwrap();
        assert_eq!(
            (o.key().as_str(), o.raised),
            ("gw-1/case/gw-1-000007#case.overdue", true)
        );
        // An application with its working-day deadline: that, not the fallback.
        c.submission =
            json!({"category": "application", "title": "低保", "item_code": "MZ110199-0001"});
        c.due = Some(t0 + time::Duration::days(15));
        assert!(case_overdue(&c, day, t0 + time::Duration::days(14)).is_none());
        assert!(
            case_overdue(&c, day, t0 + time::Duration::days(16))
                .unwrap()
                .raised
        );
        // Decided is still open for an application (it must be delivered); delivered is not.
        c.status = "decided".into();
        assert!(
            case_overdue(&c, day, t0 + time::Duration::days(16))
                .unwrap()
                .raised
        );
        c.status = "delivered".into();
        assert!(
            !case_overdue(&c, day, t0 + time::Duration::days(16))
                .unwrap()
                .raised
        );
    }

    #[test]
    fn the_outbox_raises_evictions_and_an_old_backlog() {
        let mut o = OutboxReport {
            pending: 10,
            pending_bytes: 1000,
            evicted: Default::default(),
            refused: 0,
            corrupt: 0,
            disk: None,
        };
        o.evicted.insert("telemetry".into(), 5);
        let obs = outbox("gw-1", &o, 2, Duration::from_secs(601));
        assert_eq!(obs.len(), 2);
        assert!(obs[0].title.contains("3 条"));
        assert!(obs[1].raised);
        let obs = outbox("gw-1", &o, 5, Duration::from_secs(5));
        assert_eq!(obs.len(), 1);
        assert!(!obs[0].raised);
    }

    #[test]
    fn a_full_disk_raises_an_alert_until_it_has_room() {
        let mut o = OutboxReport {
            disk: Some(firmware_config::wire::DiskReport {
                free_bytes: 3 << 20,
                total_bytes: 24 << 20,
                full: true,
                store_stopped: false,
            }),
            ..Default::default()
        };
        let obs = outbox("gw-1", &o, 0, Duration::ZERO);
        let disk = obs
            .iter()
            .find(|o| o.key() == "gw-1#gateway.disk_full")
            .unwrap();
        assert!(
            disk.raised && disk.title.contains("剩余 3 MiB"),
            "{}",
            disk.title
        );
        if let Some(d) = o.disk.as_mut() {
            d.full = false;
        }
        let obs = outbox("gw-1", &o, 0, Duration::ZERO);
        assert!(obs
            .iter()
            .any(|o| o.key() == "gw-1#gateway.disk_full" && !o.raised));
    }
}

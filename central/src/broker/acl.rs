//! Who may do what on the embedded broker.
//!
//! | who | identity | may publish | may subscribe |
//! | --- | --- | --- | --- |
//! | central | the `central` listener (or the plain one), user [`CENTRAL_USER`] with the password made at start | anything | anything |
//! | a gateway | the common name of its verified, unexpired, unrevoked client certificate (TLS listener); with `allow_plain_gateways`, the client id it gives on the plain listener | its own `gw/{id}/{status,health,events,reply,fetch}` | its own `gw/{id}/{ack,cmd,data}`, `master/…` |
//! | anyone else | — | nothing | nothing |
//!
//! A gateway must connect with its own id as client id (so no one takes over another's
//! session) and may leave a last will only on its own status topic. Whatever is refused is
//! counted (`gridedge_central_broker_refused_total{action}`) and logged with the identity.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use firmware_config::ids::GatewayId;
use firmware_config::revocation::{serial_hex, Revocations};
use firmware_config::topics::{Channel, Topic, PREFIX};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rumqttd::{AclAction, ClientIdentity};

/// The plain listener (`[broker.embedded] listen`).
pub const PLAIN: &str = "plain";
/// The TLS listener for gateways.
pub const TLS: &str = "tls";
/// Central's own listener when the plain one is open to gateways (development).
pub const CENTRAL: &str = "central";
/// The MQTT user central's own session logs in as.
pub const CENTRAL_USER: &str = "gridedge-central";

/// The channels a gateway publishes on.
const UPLINK: [Channel; 5] = [
    Channel::Status,
    Channel::Health,
    Channel::Events,
    Channel::Reply,
    Channel::Fetch,
];
/// The channels a gateway subscribes to.
const DOWNLINK: [Channel; 3] = [Channel::Ack, Channel::Cmd, Channel::Data];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    pub action: String,
}

/// Refusals, counted and logged (at most one log line per identity and action every 10 s, so
/// that a client hammering the broker cannot flood the log).
#[derive(Clone, Default)]
pub struct Refusals {
    pub counter: Family<ActionLabel, Counter>,
    logged: Arc<Mutex<HashMap<(String, &'static str), Instant>>>,
}

impl Refusals {
    /// Refusals counted in `counter` (a family registered with central's metrics).
    pub fn counted_in(counter: Family<ActionLabel, Counter>) -> Self {
        Self {
            counter,
            logged: Arc::default(),
        }
    }

    fn refuse(&self, id: &ClientIdentity, action: &AclAction<'_>) {
        let (name, what) = match action {
            AclAction::Connect => ("connect", id.client_id.as_str()),
            AclAction::Publish { topic, .. } => ("publish", *topic),
            AclAction::Subscribe { filter } => ("subscribe", *filter),
        };
        self.counter
            .get_or_create(&ActionLabel {
                action: name.to_owned(),
            })
            .inc();
        let who = describe(id);
        let now = Instant::now();
        let mut logged = self.logged.lock().unwrap_or_else(PoisonError::into_inner);
        if logged.len() > 10_000 {
            logged.retain(|_, t| now.duration_since(*t) < Duration::from_secs(10));
        }
        let key = (who.clone(), name);
        if logged
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(10))
        {
            return;
        }
        logged.insert(key, now);
        tracing::warn!(
            identity = %who,
            listener = %id.listener,
            peer = ?id.peer,
            action = name,
            target = what,
            "broker refused"
        );
    }
}

/// An identity for the log: the certificate's name and serial, or the client id.
fn describe(id: &ClientIdentity) -> String {
    match (&id.common_name, &id.serial) {
        (Some(cn), Some(serial)) => format!("cert {cn} #{}", serial_hex(serial)),
        (Some(cn), None) => format!("cert {cn}"),
        _ => format!("client {:?}", id.client_id),
    }
}

/// Who a connection is.
#[derive(Debug, PartialEq, Eq)]
enum Who {
    Central,
    Gateway(GatewayId),
    Nobody,
}

/// The embedded broker's authorization.
pub struct BrokerPolicy {
    plain_gateways: bool,
    central_id: String,
    revocations: Arc<Revocations>,
    refusals: Refusals,
}

impl BrokerPolicy {
    pub fn new(
        plain_gateways: bool,
        central_id: &str,
        revocations: Arc<Revocations>,
        refusals: Refusals,
    ) -> Self {
        Self {
            plain_gateways,
            central_id: central_id.to_owned(),
            revocations,
            refusals,
        }
    }

    fn who(&self, id: &ClientIdentity) -> Who {
        let gateway = |name: &str| match GatewayId::new(name) {
            // Central's own client id is never a gateway's: no one takes over its session.
            Ok(g) if g.as_str() != self.central_id => Who::Gateway(g),
            _ => Who::Nobody,
        };
        match id.listener.as_str() {
            // The password is checked before the ACL is asked: a username here is proven.
            CENTRAL | PLAIN if id.username.as_deref() == Some(CENTRAL_USER) => Who::Central,
            PLAIN if self.plain_gateways => gateway(&id.client_id),
            TLS => id.common_name.as_deref().map_or(Who::Nobody, gateway),
            _ => Who::Nobody,
        }
    }

    /// Whether the certificate behind a TLS identity is still good.
    fn certificate_good(&self, id: &ClientIdentity) -> bool {
        if id.listener != TLS {
            return true;
        }
        let expired = id
            .not_after
            .is_none_or(|t| t < time::OffsetDateTime::now_utc().unix_timestamp());
        let revoked = id
            .serial
            .as_deref()
            .is_none_or(|s| self.revocations.is_revoked(s));
        !expired && !revoked
    }

    /// The decision the broker asks for.
    pub fn allows(&self, id: &ClientIdentity, action: AclAction<'_>) -> bool {
        let allowed = match (self.who(id), action) {
            (Who::Central, _) => true,
            (Who::Nobody, _) => false,
            (Who::Gateway(g), AclAction::Connect) => {
                id.client_id == g.as_str() && self.certificate_good(id)
            }
            (Who::Gateway(g), AclAction::Publish { topic, .. }) => matches!(
                Topic::parse(topic),
                Ok(Topic::Gateway { gateway, channel }) if gateway == g && UPLINK.contains(&channel)
            ),
            (Who::Gateway(g), AclAction::Subscribe { filter }) => {
                DOWNLINK
                    .iter()
                    .any(|ch| Topic::gateway(&g, *ch).path() == filter)
                    || master_data(filter)
            }
        };
        if !allowed {
            self.refusals.refuse(id, &action);
        }
        allowed
    }
}

/// `gridedge/v1/master/#`, `…/master/+` or one data set's topic: what every gateway may read.
fn master_data(filter: &str) -> bool {
    filter
        .strip_prefix(PREFIX)
        .and_then(|r| r.strip_prefix("/master/"))
        .is_some_and(|rest| {
            rest == "#" || rest == "+" || (!rest.is_empty() && !rest.contains(['/', '#', '+']))
        })
}

/// A password for central's own session, new at every start.
pub fn new_password() -> String {
    use base64::Engine;
    let bytes: [u8; 24] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(plain_gateways: bool) -> BrokerPolicy {
        BrokerPolicy::new(
            plain_gateways,
            "street-command",
            Arc::new(Revocations::none()),
            Refusals::default(),
        )
    }

    fn tls(cn: &str, client_id: &str) -> ClientIdentity {
        ClientIdentity {
            listener: TLS.into(),
            common_name: Some(cn.into()),
            serial: Some(vec![1, 2, 3]),
            not_after: Some(time::OffsetDateTime::now_utc().unix_timestamp() + 3600),
            client_id: client_id.into(),
            ..Default::default()
        }
    }

    fn publish(topic: &str) -> AclAction<'_> {
        AclAction::Publish {
            topic,
            retain: false,
        }
    }

    #[test]
    fn a_gateway_publishes_only_its_own_uplink_and_reads_only_its_own_downlink() {
        let p = policy(false);
        let a = tls("gw-a", "gw-a");
        assert!(p.allows(&a, AclAction::Connect));
        for ch in ["status", "health", "events", "reply", "fetch"] {
            assert!(
                p.allows(&a, publish(&format!("gridedge/v1/gw/gw-a/{ch}"))),
                "{ch}"
            );
            assert!(
                !p.allows(&a, publish(&format!("gridedge/v1/gw/gw-b/{ch}"))),
                "{ch}"
            );
        }
        for ch in ["ack", "cmd", "data"] {
            assert!(
                !p.allows(&a, publish(&format!("gridedge/v1/gw/gw-b/{ch}"))),
                "{ch}"
            );
            assert!(
                !p.allows(&a, publish(&format!("gridedge/v1/gw/gw-a/{ch}"))),
                "{ch}"
            );
            let own = format!("gridedge/v1/gw/gw-a/{ch}");
            assert!(p.allows(&a, AclAction::Subscribe { filter: &own }));
            let other = format!("gridedge/v1/gw/gw-b/{ch}");
            assert!(!p.allows(&a, AclAction::Subscribe { filter: &other }));
        }
        for filter in [
            "gridedge/v1/#",
            "#",
            "gridedge/v1/gw/+/ack",
            "gridedge/v1/gw/gw-a/#",
            "gridedge/v1/gw/gw-a/events",
            "$share/g/gridedge/v1/gw/+/events",
            "gridedge/v1/master/a/#",
        ] {
            assert!(!p.allows(&a, AclAction::Subscribe { filter }), "{filter}");
        }
        for filter in [
            "gridedge/v1/master/#",
            "gridedge/v1/master/+",
            "gridedge/v1/master/grid",
        ] {
            assert!(p.allows(&a, AclAction::Subscribe { filter }), "{filter}");
        }
        assert!(!p.allows(&a, publish("gridedge/v1/master/grid")));
        assert!(!p.allows(&a, publish("elsewhere")));
        let refused: u64 = ["publish", "subscribe"]
            .iter()
            .map(|a| {
                p.refusals
                    .counter
                    .get_or_create(&ActionLabel {
                        action: (*a).to_owned(),
                    })
                    .get()
            })
            .sum();
        // Publishes: 5 on another's uplink, 3 + 3 on downlinks, 2 elsewhere; subscriptions:
        // 3 to another's downlink, 7 too wide.
        assert_eq!(refused, (5 + 3 + 3 + 2) + (3 + 7));
    }

    #[test]
    fn a_certificate_connects_only_under_its_own_name_while_it_is_good() {
        let revocations = Arc::new(Revocations::none());
        let p = BrokerPolicy::new(
            false,
            "street-command",
            revocations.clone(),
            Refusals::default(),
        );
        assert!(
            !p.allows(&tls("gw-b", "gw-a"), AclAction::Connect),
            "takeover"
        );
        assert!(!p.allows(&tls("gw-a", ""), AclAction::Connect));
        assert!(!p.allows(&tls("street-command", "street-command"), AclAction::Connect));
        assert!(!p.allows(&tls("Not An Id", "Not An Id"), AclAction::Connect));
        let mut expired = tls("gw-a", "gw-a");
        expired.not_after = Some(time::OffsetDateTime::now_utc().unix_timestamp() - 1);
        assert!(!p.allows(&expired, AclAction::Connect));
        assert!(p.allows(&tls("gw-a", "gw-a"), AclAction::Connect));
        revocations.replace_for_test([vec![1, 2, 3]]);
        assert!(!p.allows(&tls("gw-a", "gw-a"), AclAction::Connect));
        // No certificate at all on the TLS listener: nobody.
        let bare = ClientIdentity {
            listener: TLS.into(),
            client_id: "gw-a".into(),
            ..Default::default()
        };
        assert!(!p.allows(&bare, AclAction::Connect));
    }

    #[test]
    fn the_plain_listener_is_centrals_unless_the_development_switch_opens_it() {
        let central = ClientIdentity {
            listener: PLAIN.into(),
            username: Some(CENTRAL_USER.into()),
            client_id: "street-command".into(),
            ..Default::default()
        };
        let stranger = ClientIdentity {
            listener: PLAIN.into(),
            client_id: "gw-a".into(),
            ..Default::default()
        };
        let p = policy(false);
        assert!(p.allows(&central, AclAction::Connect));
        assert!(p.allows(
            &central,
            AclAction::Subscribe {
                filter: "gridedge/v1/#"
            }
        ));
        assert!(!p.allows(&stranger, AclAction::Connect));
        let dev = policy(true);
        assert!(dev.allows(&stranger, AclAction::Connect));
        assert!(dev.allows(&stranger, publish("gridedge/v1/gw/gw-a/events")));
        assert!(!dev.allows(&stranger, publish("gridedge/v1/gw/gw-b/events")));
        let impostor = ClientIdentity {
            client_id: "street-command".into(),
            ..stranger.clone()
        };
        assert!(!dev.allows(&impostor, AclAction::Connect));
        let on_central = ClientIdentity {
            listener: CENTRAL.into(),
            ..central.clone()
        };
        assert!(dev.allows(&on_central, publish("gridedge/v1/gw/gw-a/ack")));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
        assert_ne!(new_password(), new_password());
    }
}

//! The MQTT topic tree between gateways and central. Documented in `docs/topics.md`.
//!
//! ```text
//! gridedge/v1/gw/{gateway}/status   gateway → central  retained: online (birth) / offline (last will)
//! gridedge/v1/gw/{gateway}/health   gateway → central  periodic health of the gateway and its devices
//! gridedge/v1/gw/{gateway}/events   gateway → central  event batches from the outbox (QoS 1)
//! gridedge/v1/gw/{gateway}/ack      central → gateway  what central has stored (watermark + ranges)
//! gridedge/v1/gw/{gateway}/cmd      central → gateway  commands (snapshot, share start, config bundle)
//! gridedge/v1/gw/{gateway}/reply    gateway → central  command results
//! gridedge/v1/gw/{gateway}/data     central → gateway  master data updates, content pieces
//! gridedge/v1/gw/{gateway}/fetch    gateway → central  requests for content pieces
//! gridedge/v1/master/{dataset}      central → gateways retained master data (grid, catalogue)
//! ```
//!
//! A gateway may publish only under its own `gw/{gateway}/` and central rejects messages whose
//! envelope names another gateway than the topic does.

use std::fmt;

use crate::ids::{check_id, GatewayId, IdError};

/// First levels of every GridEdge topic; the version changes only with an incompatible tree.
pub const PREFIX: &str = "gridedge/v1";

/// What a gateway topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Status,
    Health,
    Events,
    Ack,
    Cmd,
    Reply,
    /// Master data updates and content file pieces for the gateway's replica
    /// (central → gateway).
    Data,
    /// Requests for content file pieces (gateway → central).
    Fetch,
}

impl Channel {
    pub const ALL: [Channel; 8] = [
        Channel::Status,
        Channel::Health,
        Channel::Events,
        Channel::Ack,
        Channel::Cmd,
        Channel::Reply,
        Channel::Data,
        Channel::Fetch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Status => "status",
            Channel::Health => "health",
            Channel::Events => "events",
            Channel::Ack => "ack",
            Channel::Cmd => "cmd",
            Channel::Reply => "reply",
            Channel::Data => "data",
            Channel::Fetch => "fetch",
        }
    }

    /// True for the channels that flow from central to a gateway.
    pub fn is_downlink(self) -> bool {
        matches!(self, Channel::Ack | Channel::Cmd | Channel::Data)
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// A parsed GridEdge topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    Gateway {
        gateway: GatewayId,
        channel: Channel,
    },
    Master {
        dataset: String,
    },
}

/// Why a topic string is not a GridEdge topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic {0:?} is not under {PREFIX}/")]
    ForeignPrefix(String),
    #[error("topic {0:?} has an unknown shape")]
    UnknownShape(String),
    #[error("topic {topic:?} names a bad id: {source}")]
    BadId {
        topic: String,
        #[source]
        source: IdError,
    },
}

impl Topic {
    pub fn gateway(gateway: &GatewayId, channel: Channel) -> Self {
        Topic::Gateway {
            gateway: gateway.clone(),
            channel,
        }
    }

    /// The topic as a string, for publishing.
    pub fn path(&self) -> String {
        self.to_string()
    }

    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        let rest = topic
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| TopicError::ForeignPrefix(topic.to_owned()))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let bad_id = |source| TopicError::BadId {
            topic: topic.to_owned(),
            source,
        };
        match parts.as_slice() {
            ["gw", gw, ch] => {
                let gateway = GatewayId::new(*gw).map_err(bad_id)?;
                let channel =
                    Channel::parse(ch).ok_or_else(|| TopicError::UnknownShape(topic.to_owned()))?;
                Ok(Topic::Gateway { gateway, channel })
            }
            ["master", dataset] => {
                check_id(dataset).map_err(bad_id)?;
                Ok(Topic::Master {
                    dataset: (*dataset).to_owned(),
                })
            }
            _ => Err(TopicError::UnknownShape(topic.to_owned())),
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Gateway { gateway, channel } => {
                write!(f, "{PREFIX}/gw/{gateway}/{}", channel.as_str())
            }
            Topic::Master { dataset } => write!(f, "{PREFIX}/master/{dataset}"),
        }
    }
}

/// Subscription filter for one channel of every gateway (central's side).
pub fn all_gateways(channel: Channel) -> String {
    format!("{PREFIX}/gw/+/{}", channel.as_str())
}

/// Subscription filter for every master dataset (a gateway's side).
pub fn all_master_data() -> String {
    format!("{PREFIX}/master/+")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw(s: &str) -> GatewayId {
        GatewayId::new(s).unwrap()
    }

    #[test]
    fn every_topic_round_trips() {
        for ch in Channel::ALL {
            let t = Topic::gateway(&gw("gw-1"), ch);
            assert_eq!(Topic::parse(&t.path()), Ok(t));
        }
        let m = Topic::Master {
            dataset: "grid".into(),
        };
        assert_eq!(m.path(), "gridedge/v1/master/grid");
        assert_eq!(Topic::parse("gridedge/v1/master/grid"), Ok(m));
    }

    #[test]
    fn rejects_foreign_and_malformed_topics() {
        assert!(matches!(
            Topic::parse("other/gw/a/status"),
            Err(TopicError::ForeignPrefix(_))
        ));
        assert!(matches!(
            Topic::parse("gridedge/v1/gw/a/nope"),
            Err(TopicError::UnknownShape(_))
        ));
        assert!(matches!(
            Topic::parse("gridedge/v1/gw/a/status/x"),
            Err(TopicError::UnknownShape(_))
        ));
        assert!(matches!(
            Topic::parse("gridedge/v1/gw/+/status"),
            Err(TopicError::BadId { .. })
        ));
        assert!(matches!(
            Topic::parse("gridedge/v1/gw//status"),
            Err(TopicError::BadId { .. })
        ));
    }

    #[test]
    fn filters_match_the_tree() {
        assert_eq!(all_gateways(Channel::Events), "gridedge/v1/gw/+/events");
        assert_eq!(all_master_data(), "gridedge/v1/master/+");
        assert!(Channel::Cmd.is_downlink() && !Channel::Events.is_downlink());
    }
}

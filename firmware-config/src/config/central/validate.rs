//! Checking central's config: every problem named by its path, warnings for what is allowed
//! but unwise (see `crate::config::Validator`).

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::config::{Document, Validator};

impl Document for CentralConfig {
    fn warnings(&self) -> Vec<crate::config::Issue> {
        let mut out = Vec::new();
        self.http.warnings(&mut out);
        if let Some(e) = &self.broker.embedded {
            if e.allow_plain_gateways {
                out.push(crate::config::Issue {
                    path: "broker.embedded.allow_plain_gateways".to_owned(),
                    message: format!(
                        "gateways may connect to {} without a certificate, each known only by the client id it claims: for development only",
                        e.listen
                    ),
                });
            }
        }
        if let Some(x) = &self.broker.external {
            crate::config::plain_broker_warning("broker.external.url", &x.url, &mut out);
        }
        out
    }

    fn resolve_paths(&mut self, base: &Path) {
        self.storage.dir = crate::config::resolve(base, &self.storage.dir);
        if let Some(pg) = &mut self.storage.postgres {
            pg.url.resolve_paths(base);
            if let Some(ca) = &mut pg.ca_file {
                *ca = crate::config::resolve(base, ca);
            }
        }
        self.http.resolve_paths(base);
        let tls = [
            self.broker.embedded.as_mut().and_then(|e| e.tls.as_mut()),
            self.broker.external.as_mut().and_then(|e| e.tls.as_mut()),
        ];
        for t in tls.into_iter().flatten() {
            t.resolve_paths(base);
        }
        if let Some(ca) = &mut self.identity.gateway_ca_file {
            *ca = crate::config::resolve(base, ca);
        }
        if let Some(k) = &mut self.identity.signing_key_file {
            *k = crate::config::resolve(base, k);
        }
        if let Some(c) = &mut self.identity.crl_file {
            *c = crate::config::resolve(base, c);
        }
        if let Some(w) = &mut self.notify.webhook {
            w.secret.resolve_paths(base);
        }
        if let Some(sms) = &mut self.notify.sms {
            sms.secret.resolve_paths(base);
        }
        if let Some(a) = &mut self.retention.archive_dir {
            *a = crate::config::resolve(base, a);
        }
    }

    fn validate(&self, v: &mut Validator) {
        v.id("central.id", &self.central.id);
        v.non_empty("central.name", &self.central.name);
        if let Some(r) = &self.central.replica {
            v.id("central.replica", r);
            // Replicas share what they keep and the gateways they hear from.
            if self.storage.postgres.is_none() {
                v.error(
                    "central.replica",
                    "replicas keep what they share in PostgreSQL: set storage.postgres",
                );
            }
            if self.broker.external.is_none() {
                v.error(
                    "central.replica",
                    "replicas share one broker: set broker.external",
                );
            }
        }
        self.http.validate(v);
        if let Some(u) = &self.relay.public_url {
            match url::Url::parse(u) {
                Ok(p) if matches!(p.scheme(), "http" | "https") => {}
                Ok(p) => v.error(
                    "relay.public_url",
                    format!("scheme must be http or https, not {}", p.scheme()),
                ),
                Err(e) => v.error("relay.public_url", format!("{u:?} is not a URL: {e}")),
            }
        }
        v.positive("relay.max_share", self.relay.max_share);
        if let Some(w) = &self.notify.webhook {
            match url::Url::parse(&w.url) {
                Ok(p) if matches!(p.scheme(), "http" | "https") => {}
                Ok(p) => v.error(
                    "notify.webhook.url",
                    format!("scheme must be http or https, not {}", p.scheme()),
                ),
                Err(e) => v.error(
                    "notify.webhook.url",
                    format!("{:?} is not a URL: {e}", w.url),
                ),
            }
            w.secret.validate("notify.webhook.secret", v);
        }
        if let Some(t) = &self.map.tiles {
            let template = t.replace(['{', '}'], "");
            match url::Url::parse(&template) {
                Ok(p)
                    if matches!(p.scheme(), "http" | "https")
                        && ["{z}", "{x}", "{y}"].iter().all(|k| t.contains(k)) => {}
                Ok(_) => v.error("map.tiles", "an http(s) URL template with {z}, {x} and {y}"),
                Err(e) => v.error("map.tiles", format!("{t:?} is not a URL: {e}")),
            }
        }
        if let Some(sms) = &self.notify.sms {
            match url::Url::parse(&sms.url) {
                Ok(p) if matches!(p.scheme(), "http" | "https") => {}
                Ok(p) => v.error(
                    "notify.sms.url",
                    format!("scheme must be http or https, not {}", p.scheme()),
                ),
                Err(e) => v.error("notify.sms.url", format!("{:?} is not a URL: {e}", sms.url)),
            }
            sms.secret.validate("notify.sms.secret", v);
            v.non_empty("notify.sms.sign_name", &sms.sign_name);
            if sms.provider == super::SmsProvider::Aliyun {
                v.non_empty("notify.sms.access_key_id", &sms.access_key_id);
            }
            if sms.templates.is_empty() {
                v.error(
                    "notify.sms.templates",
                    "at least one template, by notice kind",
                );
            }
            for (kind, code) in &sms.templates {
                if !super::SMS_KINDS.contains(&kind.as_str()) {
                    v.error(
                        "notify.sms.templates",
                        format!("{kind:?}: use {}", super::SMS_KINDS.join(", ")),
                    );
                }
                v.non_empty(&format!("notify.sms.templates.{kind}"), code);
            }
        }
        if !(1..=100).contains(&self.notify.max_attempts) {
            v.error("notify.max_attempts", "1 to 100");
        }
        v.duration_within(
            "notify.retry_after",
            self.notify.retry_after,
            Duration::from_millis(10),
            Duration::from_secs(3600),
        );
        for (field, d) in [
            (
                "alerts.escalate_to_station",
                self.alerts.escalate_to_station,
            ),
            (
                "alerts.escalate_to_command",
                self.alerts.escalate_to_command,
            ),
            ("alerts.case_limit", self.alerts.case_limit),
            ("alerts.ack_within", self.alerts.ack_within),
            ("alerts.resolve_within", self.alerts.resolve_within),
        ] {
            v.duration_within(
                field,
                d,
                Duration::from_secs(1),
                Duration::from_secs(7 * 24 * 3600),
            );
        }
        v.unique_ids("operators", self.operators.iter().map(|o| o.name.as_str()));
        for (i, o) in self.operators.iter().enumerate() {
            v.id(&format!("operators[{i}].name"), &o.name);
            if !OPERATOR_ROLES.contains(&o.role.as_str()) {
                v.error(
                    &format!("operators[{i}].role"),
                    format!(
                        "{:?} is not a role; use operator, supervisor or administrator",
                        o.role
                    ),
                );
            }
            if !o.password_hash.starts_with("$argon2id$") {
                v.error(
                    &format!("operators[{i}].password_hash"),
                    "an Argon2id hash ($argon2id$…) from `central operator hash`, not a password",
                );
            }
        }
        v.unique_ids(
            "api_tokens",
            self.api_tokens.iter().map(|t| t.name.as_str()),
        );
        for (i, t) in self.api_tokens.iter().enumerate() {
            v.id(&format!("api_tokens[{i}].name"), &t.name);
            if !OPERATOR_ROLES.contains(&t.role.as_str()) {
                v.error(
                    &format!("api_tokens[{i}].role"),
                    format!(
                        "{:?} is not a role; use operator, supervisor or administrator",
                        t.role
                    ),
                );
            }
            if t.token_sha256.len() != 64 || !t.token_sha256.bytes().all(|b| b.is_ascii_hexdigit())
            {
                v.error(
                    &format!("api_tokens[{i}].token_sha256"),
                    "64 hex digits (the SHA-256 `central operator token` prints), not the token",
                );
            }
        }
        if crate::config::gateway::parse_utc_offset(&self.alerts.utc_offset).is_none() {
            v.error(
                "alerts.utc_offset",
                format!(
                    "{:?} is not an offset such as +08:00",
                    self.alerts.utc_offset
                ),
            );
        }
        if let Some(k) = &self.identity.signing_key_file {
            v.file_exists("identity.signing_key_file", k);
        }
        if let Some(c) = &self.identity.gateway_ca_file {
            v.file_exists("identity.gateway_ca_file", c);
        }
        if let Some(c) = &self.identity.crl_file {
            v.file_exists("identity.crl_file", c);
            if self.gateway_ca().is_none() {
                v.error(
                    "identity.crl_file",
                    "needs the CA that signed it: identity.gateway_ca_file or the broker's TLS files",
                );
            }
        }
        v.duration_within(
            "identity.message_max_age",
            self.identity.message_max_age,
            Duration::from_secs(30),
            Duration::from_secs(7 * 24 * 3600),
        );
        match (&self.broker.embedded, &self.broker.external) {
            (Some(_), Some(_)) => v.error(
                "broker",
                "give either [broker.embedded] or [broker.external], not both",
            ),
            (None, None) => v.error("broker", "give [broker.embedded] or [broker.external]"),
            _ => {}
        }
        if let Some(e) = &self.broker.embedded {
            match (&e.tls_listen, &e.tls) {
                (Some(_), None) => v.error("broker.embedded.tls", "required with tls_listen"),
                (None, Some(_)) => v.error("broker.embedded.tls_listen", "required with tls"),
                _ => {}
            }
            if !e.listen.ip().is_loopback() && !e.allow_plain_gateways {
                v.error(
                    "broker.embedded.listen",
                    format!("{} is not a loopback address; the plain listener is for this host only — gateways use tls_listen", e.listen),
                );
            }
            if e.tls_listen == Some(e.listen) {
                v.error("broker.embedded.tls_listen", "must differ from listen");
            }
            if let Some(t) = &e.tls {
                t.validate("broker.embedded.tls", v);
            }
            if e.max_connections == 0 {
                v.error(
                    "broker.embedded.max_connections",
                    "must be greater than zero",
                );
            }
        }
        if let Some(x) = &self.broker.external {
            if let Some(url) = v.broker_url("broker.external.url", &x.url) {
                match (url.scheme(), &x.tls) {
                    ("mqtts", None) => {
                        v.error("broker.external.tls", "required for an mqtts:// broker")
                    }
                    ("mqtt", Some(_)) => v.error(
                        "broker.external.tls",
                        "given, but the broker URL is mqtt:// (plain); use mqtts://",
                    ),
                    _ => {}
                }
            }
            if let Some(t) = &x.tls {
                t.validate("broker.external.tls", v);
            }
        }
        if let Some(pg) = &self.storage.postgres {
            pg.url.validate("storage.postgres.url", v);
            if !(1..=256).contains(&pg.pool_size) {
                v.error("storage.postgres.pool_size", "must be 1 to 256");
            }
            if let Some(ca) = &pg.ca_file {
                if !ca.is_file() {
                    v.error(
                        "storage.postgres.ca_file",
                        format!("{} is not a file", ca.display()),
                    );
                }
            }
        }
        if self.storage.dir.exists() && !self.storage.dir.is_dir() {
            v.error(
                "storage.dir",
                format!("{} exists and is not a folder", self.storage.dir.display()),
            );
        }
        v.duration_within(
            "health.gateway_silence",
            self.health.gateway_silence,
            Duration::from_secs(5),
            Duration::from_secs(86_400),
        );
        v.duration_within(
            "health.max_clock_offset",
            self.health.max_clock_offset,
            Duration::from_secs(1),
            Duration::from_secs(86_400),
        );
        for (class, keep) in [
            ("telemetry", self.retention.telemetry),
            ("health", self.retention.health),
            ("submission", self.retention.submission),
            ("alert", self.retention.alert),
        ] {
            v.duration_within(
                &format!("retention.{class}"),
                keep,
                Duration::from_secs(10),
                Duration::from_secs(100 * 365 * 86_400),
            );
        }
        v.duration_within(
            "retention.prune_every",
            self.retention.prune_every,
            Duration::from_secs(1),
            Duration::from_secs(86_400),
        );
        if let Some(a) = &self.retention.archive_dir {
            if a.exists() && !a.is_dir() {
                v.error(
                    "retention.archive_dir",
                    format!("{} exists and is not a folder", a.display()),
                );
            }
        }
    }
}

//! Checking a gateway's config: every problem named by its path, warnings for what is
//! allowed but unwise (see `crate::config::Validator`).

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::config::units::ByteSize;
use crate::config::{Document, Validator};

impl Document for GatewayConfig {
    fn warnings(&self) -> Vec<crate::config::Issue> {
        self.collect_warnings()
    }

    fn resolve_paths(&mut self, base: &Path) {
        self.base_dir = base.to_owned();
        self.uplink.central_key_file = crate::config::resolve(base, &self.uplink.central_key_file);
        self.http.resolve_paths(base);
        self.storage.dir = crate::config::resolve(base, &self.storage.dir);
        if let Some(tls) = &mut self.uplink.tls {
            tls.resolve_paths(base);
        }
        for cam in &mut self.cameras {
            if let Some(c) = &mut cam.credentials {
                c.password.resolve_paths(base);
            }
        }
        for t in &mut self.terminals {
            if let Some(tok) = &mut t.token {
                tok.resolve_paths(base);
            }
        }
        for s in &mut self.sources {
            s.token.resolve_paths(base);
        }
    }

    fn validate(&self, v: &mut Validator) {
        v.id("site.id", &self.site.id);
        self.http.validate(v);
        v.non_empty("site.name", &self.site.name);
        if parse_utc_offset(&self.site.utc_offset).is_none() {
            v.error(
                "site.utc_offset",
                format!(
                    "{:?} is not an offset; write +HH:MM, e.g. +08:00",
                    self.site.utc_offset
                ),
            );
        }
        for (i, a) in self.site.areas.iter().enumerate() {
            if a.len() != 14 || !a.bytes().all(|b| b.is_ascii_digit()) {
                v.error(
                    &format!("site.areas[{i}]"),
                    format!("{a:?} is not an area code (14 digits: the street's 12 and 2)"),
                );
            }
        }
        v.id("gateway.id", &self.gateway.id);
        self.uplink.validate(v);
        self.storage.validate(v);
        v.unique_ids("cameras", self.cameras.iter().map(|c| c.id.as_str()));
        for (i, cam) in self.cameras.iter().enumerate() {
            cam.validate(&format!("cameras[{i}]"), v);
        }
        v.unique_ids("terminals", self.terminals.iter().map(|t| t.id.as_str()));
        self.terminal_health.validate(v);
        self.kiosk.validate(v);
        if !(160..=3840).contains(&self.video.transcode_width) {
            v.error("video.transcode_width", "160 to 3840 pixels");
        }
        if self.clips.post > Duration::from_secs(300) {
            v.error("clips.post", "at most 5 min");
        }
        if self.clips.pre > Duration::from_secs(300) {
            v.error("clips.pre", "at most 5 min (the ring is held in memory)");
        }
        if self.clips.disk_budget.0 < 16 << 20 && !self.clips.pre.is_zero() {
            v.error(
                "clips.disk_budget",
                "at least 16 MiB, or clips.pre = \"0s\" for no clips",
            );
        }
        if let Some(b) = &self.bundles {
            if b.public_key_file.is_some() {
                v.error(
                    "bundles.public_key_file",
                    "central's key is now uplink.central_key_file (it checks every message from central, bundles included); move the line there",
                );
            }
            v.duration_within(
                "bundles.confirm_within",
                b.confirm_within,
                Duration::from_secs(10),
                Duration::from_secs(24 * 3600),
            );
            v.duration_within(
                "bundles.max_age",
                b.max_age,
                Duration::from_secs(60),
                Duration::from_secs(365 * 24 * 3600),
            );
        }
        for (i, t) in self.terminals.iter().enumerate() {
            t.validate(&format!("terminals[{i}]"), v);
        }
        v.unique_ids("sources", self.sources.iter().map(|s| s.id.as_str()));
        for (i, s) in self.sources.iter().enumerate() {
            v.id(&format!("sources[{i}].id"), &s.id);
            v.non_empty(&format!("sources[{i}].name"), &s.name);
            s.token.validate(&format!("sources[{i}].token"), v);
            for (j, k) in s.kinds.iter().enumerate() {
                let family = k.strip_suffix(".*").unwrap_or(k);
                let path = format!("sources[{i}].kinds[{j}]");
                if family.is_empty()
                    || family.len() > 120
                    || !family
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                {
                    v.error(
                        &path,
                        format!("{k:?} is not a kind (letters, digits, '.', '_', '-') or a family (`door.*`)"),
                    );
                } else if crate::kinds::is_gateway_kind(family)
                    || crate::kinds::is_gateway_kind(&format!("{family}."))
                {
                    v.error(
                        &path,
                        format!(
                            "{k:?} is one of the gateway's own kinds, which no source may post"
                        ),
                    );
                }
            }
            for (j, c) in s.cameras.iter().enumerate() {
                if !self.cameras.iter().any(|k| &k.id == c) {
                    v.error(
                        &format!("sources[{i}].cameras[{j}]"),
                        format!("{c:?} is not one of the gateway's cameras"),
                    );
                }
            }
            if let Some(q) = s.max_pending {
                if q < ByteSize::kib(64) {
                    v.error(
                        &format!("sources[{i}].max_pending"),
                        format!("{q} is too small; at least 64 KiB"),
                    );
                }
            }
        }
    }
}

impl GatewayConfig {
    fn collect_warnings(&self) -> Vec<crate::config::Issue> {
        let mut out = Vec::new();
        self.http.warnings(&mut out);
        crate::config::plain_broker_warning("uplink.broker", &self.uplink.broker, &mut out);
        out
    }
}

impl Uplink {
    fn validate(&self, v: &mut Validator) {
        if let Some(url) = v.broker_url("uplink.broker", &self.broker) {
            match (url.scheme(), &self.tls) {
                ("mqtts", None) => v.error("uplink.tls", "required for an mqtts:// broker"),
                ("mqtt", Some(_)) => v.error(
                    "uplink.tls",
                    "given, but the broker URL is mqtt:// (plain); use mqtts://",
                ),
                _ => {}
            }
        }
        if let Some(tls) = &self.tls {
            tls.validate("uplink.tls", v);
        }
        v.file_exists("uplink.central_key_file", &self.central_key_file);
        v.duration_within(
            "uplink.downlink_max_age",
            self.downlink_max_age,
            Duration::from_secs(60),
            Duration::from_secs(90 * 24 * 3600),
        );
        v.duration_within(
            "uplink.keep_alive",
            self.keep_alive,
            Duration::from_secs(5),
            Duration::from_secs(65_535),
        );
        v.duration_within(
            "uplink.health_interval",
            self.health_interval,
            Duration::from_secs(1),
            Duration::from_secs(3600),
        );
        v.positive("uplink.reconnect_min", self.reconnect_min);
        if self.reconnect_min > self.reconnect_max {
            v.error(
                "uplink.reconnect_max",
                "must not be less than uplink.reconnect_min",
            );
        }
    }
}

impl Storage {
    fn validate(&self, v: &mut Validator) {
        if self.disk_budget < ByteSize::mib(16) {
            v.error(
                "storage.disk_budget",
                format!("{} is too small; at least 16 MiB", self.disk_budget),
            );
        }
        if self.cache_size < ByteSize::mib(1) {
            v.error(
                "storage.cache_size",
                format!("{} is too small; at least 1 MiB", self.cache_size),
            );
        }
        if self.dir.exists() && !self.dir.is_dir() {
            v.error(
                "storage.dir",
                format!("{} exists and is not a folder", self.dir.display()),
            );
        }
    }
}

impl Camera {
    fn validate(&self, p: &str, v: &mut Validator) {
        v.id(&format!("{p}.id"), &self.id);
        v.non_empty(&format!("{p}.name"), &self.name);
        let url_path = format!("{p}.url");
        match url::Url::parse(&self.url) {
            Err(e) => v.error(&url_path, format!("{:?} is not a URL: {e}", self.url)),
            Ok(u) if u.scheme() == "rtsps" => v.error(&url_path, "rtsps:// is not supported yet; use rtsp:// on the centre's LAN"),
            Ok(u) if u.scheme() != "rtsp" => v.error(&url_path, format!("scheme must be rtsp, not {}", u.scheme())),
            Ok(u) if u.host_str().is_none_or(str::is_empty) => v.error(&url_path, "needs a host"),
            Ok(u) if !u.username().is_empty() || u.password().is_some() => v.error(
                &url_path,
                format!("must not hold credentials; use {p}.credentials with a password from env or file"),
            ),
            Ok(_) => {}
        }
        if let Some(c) = &self.credentials {
            v.non_empty(&format!("{p}.credentials.username"), &c.username);
            c.password.validate(&format!("{p}.credentials.password"), v);
        }
        v.duration_within(
            &format!("{p}.stall_timeout"),
            self.stall_timeout,
            Duration::from_secs(1),
            Duration::from_secs(600),
        );
        let s = &self.snapshot;
        v.positive(&format!("{p}.snapshot.interval"), s.interval);
        if !(16..=7680).contains(&s.width) {
            v.error(
                &format!("{p}.snapshot.width"),
                format!("{} is out of range; use 16 to 7680", s.width),
            );
        }
        if !(1..=100).contains(&s.quality) {
            v.error(
                &format!("{p}.snapshot.quality"),
                format!("{} is out of range; use 1 to 100", s.quality),
            );
        }
        self.sensing.validate(&format!("{p}.sensing"), v);
    }
}

impl Sensing {
    fn validate(&self, p: &str, v: &mut Validator) {
        v.positive(&format!("{p}.hold_down"), self.hold_down);
        if !(0.1..=10.0).contains(&self.max_decode_fps) {
            v.error(
                &format!("{p}.max_decode_fps"),
                format!("{} is out of range; use 0.1 to 10", self.max_decode_fps),
            );
        }
        let mut names = std::collections::HashSet::new();
        for (i, z) in self.motion_zones.iter().enumerate() {
            let zp = format!("{p}.motion_zones[{i}]");
            v.non_empty(&format!("{zp}.name"), &z.name);
            if !names.insert(z.name.as_str()) {
                v.error(
                    &format!("{zp}.name"),
                    format!("duplicate zone name {:?}", z.name),
                );
            }
            if z.polygon.len() < 3 {
                v.error(
                    &format!("{zp}.polygon"),
                    format!("has {} corner(s); a zone needs at least 3", z.polygon.len()),
                );
            }
            for (j, [x, y]) in z.polygon.iter().enumerate() {
                if !(0.0..=1.0).contains(x) || !(0.0..=1.0).contains(y) {
                    v.error(
                        &format!("{zp}.polygon[{j}]"),
                        format!("[{x}, {y}] is outside the picture; use fractions 0.0 to 1.0"),
                    );
                }
            }
            if !(z.threshold > 0.0 && z.threshold <= 1.0) {
                v.error(
                    &format!("{zp}.threshold"),
                    format!(
                        "{} is out of range; use more than 0.0 up to 1.0",
                        z.threshold
                    ),
                );
            }
            if let Some(s) = &z.schedule {
                for (field, value) in [("from", &s.from), ("to", &s.to)] {
                    if parse_hhmm(value).is_none() {
                        v.error(
                            &format!("{zp}.schedule.{field}"),
                            format!("{value:?} is not a time; write HH:MM"),
                        );
                    }
                }
                if s.from == s.to {
                    v.error(
                        &format!("{zp}.schedule.to"),
                        "equals `from`: the window would be empty",
                    );
                }
                if s.days.is_empty() {
                    v.error(&format!("{zp}.schedule.days"), "must name at least one day");
                }
                for (j, d) in s.days.iter().enumerate() {
                    if !DAYS.contains(&d.as_str()) {
                        v.error(
                            &format!("{zp}.schedule.days[{j}]"),
                            format!("{d:?} is not a day; use mon, tue, wed, thu, fri, sat or sun"),
                        );
                    }
                }
            }
        }
    }
}

impl Terminal {
    fn validate(&self, p: &str, v: &mut Validator) {
        v.id(&format!("{p}.id"), &self.id);
        v.non_empty(&format!("{p}.name"), &self.name);
        if let Some(addr) = &self.address {
            http_url(&format!("{p}.address"), addr, v);
        }
        if let Some(tok) = &self.token {
            tok.validate(&format!("{p}.token"), v);
        }
        let hp = format!("{p}.health");
        match &self.health {
            HealthSource::Heartbeat {
                interval,
                misses_before_offline,
                successes_before_online,
            } => {
                v.duration_within(
                    &format!("{hp}.interval"),
                    *interval,
                    Duration::from_secs(1),
                    Duration::from_secs(3600),
                );
                misses(&hp, *misses_before_offline, v);
                successes(&hp, *successes_before_online, v);
                if self.token.is_none() {
                    v.error(
                        &format!("{p}.token"),
                        "required: heartbeats are authenticated with the terminal's token",
                    );
                }
            }
            HealthSource::HttpProbe {
                url,
                expect_status,
                interval,
                timeout,
                misses_before_offline,
                successes_before_online,
            } => {
                http_url(&format!("{hp}.url"), url, v);
                if !(100..=599).contains(expect_status) {
                    v.error(
                        &format!("{hp}.expect_status"),
                        format!("{expect_status} is not an HTTP status"),
                    );
                }
                probe_timing(&hp, *interval, *timeout, v);
                misses(&hp, *misses_before_offline, v);
                successes(&hp, *successes_before_online, v);
            }
            HealthSource::TcpProbe {
                address,
                interval,
                timeout,
                misses_before_offline,
                successes_before_online,
            } => {
                let ok = address.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                });
                if !ok {
                    v.error(
                        &format!("{hp}.address"),
                        format!("{address:?} is not host:port"),
                    );
                }
                probe_timing(&hp, *interval, *timeout, v);
                misses(&hp, *misses_before_offline, v);
                successes(&hp, *successes_before_online, v);
            }
        }
    }
}

fn http_url(path: &str, s: &str, v: &mut Validator) {
    match url::Url::parse(s) {
        Err(e) => v.error(path, format!("{s:?} is not a URL: {e}")),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => v.error(
            path,
            format!("scheme must be http or https, not {}", u.scheme()),
        ),
        Ok(_) => {}
    }
}

fn probe_timing(hp: &str, interval: Duration, timeout: Duration, v: &mut Validator) {
    v.duration_within(
        &format!("{hp}.interval"),
        interval,
        Duration::from_secs(1),
        Duration::from_secs(3600),
    );
    v.positive(&format!("{hp}.timeout"), timeout);
    if timeout >= interval {
        v.error(
            &format!("{hp}.timeout"),
            "must be less than the probe interval",
        );
    }
}

fn successes(hp: &str, n: u32, v: &mut Validator) {
    if !(1..=100).contains(&n) {
        v.error(
            &format!("{hp}.successes_before_online"),
            format!("{n} is out of range; use 1 to 100"),
        );
    }
}

impl TerminalPolicy {
    fn validate(&self, v: &mut Validator) {
        if !(-40.0..=150.0).contains(&self.max_temperature_c) {
            v.error(
                "terminal_health.max_temperature_c",
                format!("{} is out of range; use -40 to 150", self.max_temperature_c),
            );
        }
        v.duration_within(
            "terminal_health.flap_window",
            self.flap_window,
            Duration::from_secs(1),
            Duration::from_secs(24 * 3600),
        );
        if !(2..=1000).contains(&self.flap_changes) {
            v.error(
                "terminal_health.flap_changes",
                format!("{} is out of range; use 2 to 1000", self.flap_changes),
            );
        }
    }
}

fn misses(hp: &str, n: u32, v: &mut Validator) {
    if !(1..=100).contains(&n) {
        v.error(
            &format!("{hp}.misses_before_offline"),
            format!("{n} is out of range; use 1 to 100"),
        );
    }
}

impl KioskLimits {
    fn validate(&self, v: &mut Validator) {
        if !(0.1..=1_000_000.0).contains(&self.requests_per_second) {
            v.error(
                "kiosk.requests_per_second",
                format!(
                    "{} is out of range; use 0.1 to 1000000",
                    self.requests_per_second
                ),
            );
        }
        if !(1..=1_000_000).contains(&self.burst) {
            v.error(
                "kiosk.burst",
                format!("{} is out of range; use 1 to 1000000", self.burst),
            );
        }
        if !(1..=100_000).contains(&self.submissions_per_hour) {
            v.error(
                "kiosk.submissions_per_hour",
                format!(
                    "{} is out of range; use 1 to 100000",
                    self.submissions_per_hour
                ),
            );
        }
    }
}

//! Config validation as installers meet it: every problem, each with its field path.

use std::path::Path;

use firmware_config::config::gateway::{HealthSource, Transport};
use firmware_config::config::{self, CentralConfig, ConfigError, GatewayConfig};
use firmware_config::examples;

const MINIMAL_GATEWAY: &str = r#"
[site]
id = "s1"
name = "Site one"
[gateway]
id = "gw-1"
[uplink]
broker = "mqtt://127.0.0.1:1883"
central_key_file = "CENTRAL_KEY"
[storage]
dir = "data"
"#;

/// A file that stands for central's public key (validation only checks that it is there).
fn central_key() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/central.pub")
}

/// Parses a gateway config whose `central_key_file` is the placeholder `CENTRAL_KEY`.
fn parse_gateway(text: &str, base: &Path) -> Result<GatewayConfig, ConfigError> {
    config::parse::<GatewayConfig>(&text.replace("CENTRAL_KEY", central_key()), base)
}

fn issues_of(text: &str) -> Vec<String> {
    match parse_gateway(text, Path::new("/cfg")) {
        Ok(_) => vec![],
        Err(e) => e.issues(),
    }
}

#[test]
fn minimal_gateway_gets_documented_defaults_and_absolute_paths() {
    let cfg: GatewayConfig = parse_gateway(MINIMAL_GATEWAY, Path::new("/cfg")).unwrap();
    assert_eq!(cfg.http.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(cfg.storage.dir, Path::new("/cfg/data"));
    assert_eq!(cfg.storage.disk_budget.to_string(), "1 GiB");
    assert_eq!(cfg.uplink.keep_alive.as_secs(), 30);
    assert!(cfg.cameras.is_empty() && cfg.terminals.is_empty());
}

#[test]
fn three_problems_are_three_errors_each_with_its_path() {
    let text = format!(
        r#"{MINIMAL_GATEWAY}
[[cameras]]
id = "a"
name = "A"
url = "http://10.0.0.1/stream"

[[cameras]]
id = "b"
name = "B"
url = "rtsp://10.0.0.2/stream"
snapshot = {{ interval = "0s" }}

[[cameras]]
id = "a"
name = "A again"
url = "rtsp://10.0.0.3/stream"
"#
    );
    let issues = issues_of(&text);
    assert_eq!(
        issues,
        vec![
            "cameras[2].id: duplicate id \"a\" (also cameras[0].id)".to_owned(),
            "cameras[0].url: scheme must be rtsp, not http".to_owned(),
            "cameras[1].snapshot.interval: must be greater than zero".to_owned(),
        ]
    );
}

#[test]
fn unknown_field_is_named_by_its_path() {
    let text = format!("{MINIMAL_GATEWAY}\n[[cameras]]\nid = \"a\"\nname = \"A\"\nurl = \"rtsp://h/\"\nurll = \"x\"\n");
    let err = config::parse::<GatewayConfig>(&text, Path::new("/")).unwrap_err();
    let ConfigError::Syntax(issue) = &err else {
        panic!("{err}")
    };
    assert_eq!(issue.path, "cameras[0].urll");
    assert!(
        issue.message.contains("unknown field `urll`"),
        "{}",
        issue.message
    );
    assert!(issue.message.contains("line"), "{}", issue.message);
}

#[test]
fn wrong_type_is_named_by_its_path() {
    let text = MINIMAL_GATEWAY.replace("[storage]\n", "[storage]\ndisk_budget = \"lots\"\n");
    let issues = issues_of(&text);
    assert_eq!(issues.len(), 1);
    assert!(issues[0].starts_with("storage.disk_budget: "), "{issues:?}");
}

#[test]
fn inline_credentials_and_rtsps_are_refused() {
    let text = format!(
        "{MINIMAL_GATEWAY}\n[[cameras]]\nid = \"a\"\nname = \"A\"\nurl = \"rtsp://admin:12345@10.0.0.1/\"\n\
         [[cameras]]\nid = \"b\"\nname = \"B\"\nurl = \"rtsps://10.0.0.1/\"\n"
    );
    let issues = issues_of(&text);
    assert_eq!(issues.len(), 2, "{issues:?}");
    assert!(
        issues[0].starts_with("cameras[0].url: must not hold credentials"),
        "{issues:?}"
    );
    assert!(
        issues[1].starts_with("cameras[1].url: rtsps:// is not supported"),
        "{issues:?}"
    );
}

#[test]
fn missing_files_and_impossible_intervals_are_reported() {
    let text = MINIMAL_GATEWAY.replace(
        "broker = \"mqtt://127.0.0.1:1883\"",
        "broker = \"mqtts://central:8883\"\nreconnect_min = \"2m\"\nreconnect_max = \"1m\"\n\
         tls = { ca_file = \"nope/ca.pem\", cert_file = \"nope/gw.pem\", key_file = \"nope/gw.key\" }",
    ) + "\n[[terminals]]\nid = \"t\"\nname = \"T\"\nkind = \"video_terminal\"\n\
         health = { mode = \"http_probe\", url = \"http://h/\", interval = \"5s\", timeout = \"5s\" }\n";
    let issues = issues_of(&text);
    assert!(
        issues
            .iter()
            .any(|i| i.starts_with("uplink.tls.ca_file: /cfg/nope/ca.pem: ")),
        "{issues:?}"
    );
    assert!(
        issues
            .iter()
            .any(|i| i.starts_with("uplink.tls.key_file: ")),
        "{issues:?}"
    );
    assert!(
        issues.contains(
            &"uplink.reconnect_max: must not be less than uplink.reconnect_min".to_owned()
        ),
        "{issues:?}"
    );
    assert!(
        issues.contains(
            &"terminals[0].health.timeout: must be less than the probe interval".to_owned()
        ),
        "{issues:?}"
    );
}

#[test]
fn heartbeat_terminal_needs_a_token_and_tls_needs_mqtts() {
    let text = MINIMAL_GATEWAY.to_owned()
        + "\n[[terminals]]\nid = \"k\"\nname = \"K\"\nkind = \"kiosk\"\nhealth = { mode = \"heartbeat\" }\n";
    assert_eq!(
        issues_of(&text),
        vec![
            "terminals[0].token: required: heartbeats are authenticated with the terminal's token"
        ]
    );
    let bad_mode = MINIMAL_GATEWAY.to_owned()
        + "\n[[terminals]]\nid = \"k\"\nname = \"K\"\nkind = \"kiosk\"\nhealth = { mode = \"carrier_pigeon\" }\n";
    let issues = issues_of(&bad_mode);
    assert!(issues[0].starts_with("terminals[0].health"), "{issues:?}");
}

#[test]
fn secret_refs_need_exactly_one_source_and_are_read_lazily() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
    let text = format!(
        "{MINIMAL_GATEWAY}\n[[cameras]]\nid = \"a\"\nname = \"A\"\nurl = \"rtsp://h/\"\ntransport = \"udp\"\n\
         credentials = {{ username = \"u\", password = {{ file = \"pw\" }} }}\n\
         [[cameras]]\nid = \"b\"\nname = \"B\"\nurl = \"rtsp://h/\"\n\
         credentials = {{ username = \"u\", password = {{ env = \"X\", file = \"pw\" }} }}\n"
    );
    let err = parse_gateway(&text, dir.path()).unwrap_err();
    assert_eq!(
        err.issues(),
        vec!["cameras[1].credentials.password: give either `env` or `file`, not both"]
    );
    let ok_text = text.replace("env = \"X\", ", "");
    let cfg: GatewayConfig = parse_gateway(&ok_text, dir.path()).unwrap();
    assert_eq!(cfg.cameras[0].transport, Transport::Udp);
    let pw = cfg.cameras[0]
        .credentials
        .as_ref()
        .unwrap()
        .password
        .read()
        .unwrap();
    assert_eq!(pw, "s3cret");
}

#[test]
fn example_terminals_cover_every_health_mode() {
    let cfg: GatewayConfig = config::parse_elsewhere(examples::GATEWAY, Path::new("/")).unwrap();
    let modes: Vec<_> = cfg
        .terminals
        .iter()
        .map(|t| match t.health {
            HealthSource::Heartbeat { .. } => "heartbeat",
            HealthSource::HttpProbe { .. } => "http",
            HealthSource::TcpProbe { .. } => "tcp",
        })
        .collect();
    assert_eq!(modes, ["heartbeat", "http", "tcp"]);
}

#[test]
fn central_needs_exactly_one_broker() {
    let none = "[central]\nid = \"c\"\nname = \"C\"\n[broker]\n[storage]\ndir = \"d\"\n";
    let err = config::parse::<CentralConfig>(none, Path::new("/")).unwrap_err();
    assert_eq!(
        err.issues(),
        vec!["broker: give [broker.embedded] or [broker.external]"]
    );
    let both = "[central]\nid = \"c\"\nname = \"C\"\n[broker.embedded]\n[broker.external]\nurl = \"mqtt://h\"\n[storage]\ndir = \"d\"\n";
    let err = config::parse::<CentralConfig>(both, Path::new("/")).unwrap_err();
    assert_eq!(
        err.issues(),
        vec!["broker: give either [broker.embedded] or [broker.external], not both"]
    );
    let tls_half = "[central]\nid = \"c\"\nname = \"C\"\n[broker.embedded]\ntls_listen = \"0.0.0.0:8883\"\n[storage]\ndir = \"d\"\n";
    let err = config::parse::<CentralConfig>(tls_half, Path::new("/")).unwrap_err();
    assert_eq!(
        err.issues(),
        vec!["broker.embedded.tls: required with tls_listen"]
    );
}

#[test]
fn load_reports_unreadable_file() {
    let err = config::load::<GatewayConfig>(Path::new("/nonexistent/gateway.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("/nonexistent/gateway.toml"));
}

#[test]
fn the_embedded_plain_listener_stays_on_loopback() {
    let text = "[central]\nid = \"c\"\nname = \"C\"\n[broker.embedded]\nlisten = \"0.0.0.0:1883\"\n[storage]\ndir = \"d\"\n";
    let err = config::parse::<CentralConfig>(text, Path::new("/")).unwrap_err();
    assert!(
        err.issues()[0]
            .starts_with("broker.embedded.listen: 0.0.0.0:1883 is not a loopback address"),
        "{:?}",
        err.issues()
    );
}

#[test]
fn an_api_token_entry_keeps_a_hash_and_a_real_role() {
    let base = "[central]\nid = \"c\"\nname = \"C\"\n[broker.embedded]\n[storage]\ndir = \"d\"\n";
    let good = format!(
        "{base}[[api_tokens]]\nname = \"loader\"\nrole = \"administrator\"\ntoken_sha256 = \"{}\"\n",
        "ab".repeat(32)
    );
    let c = config::parse::<CentralConfig>(&good, Path::new("/")).unwrap();
    assert_eq!(c.api_tokens[0].name, "loader");
    let bad = format!(
        "{base}[[api_tokens]]\nname = \"loader\"\nrole = \"root\"\ntoken_sha256 = \"ge_the-token-itself\"\n\
         [[api_tokens]]\nname = \"loader\"\nrole = \"operator\"\ntoken_sha256 = \"{}\"\n",
        "cd".repeat(32)
    );
    let issues = config::parse::<CentralConfig>(&bad, Path::new("/"))
        .unwrap_err()
        .issues();
    assert_eq!(issues.len(), 3, "{issues:?}");
    assert!(
        issues.iter().any(|i| i.starts_with("api_tokens[0].role")),
        "{issues:?}"
    );
    assert!(
        issues
            .iter()
            .any(|i| i.starts_with("api_tokens[0].token_sha256")),
        "{issues:?}"
    );
    assert!(
        issues.iter().any(|i| i.contains("loader")),
        "the duplicate name: {issues:?}"
    );
}

#[test]
fn central_on_postgres_names_its_url_as_a_secret_and_a_real_pool() {
    let base = "[central]\nid = \"c\"\nname = \"C\"\n[broker.embedded]\n[storage]\ndir = \"d\"\n";
    let good = format!("{base}postgres = {{ url = {{ env = \"GRIDEDGE_PG_URL\" }} }}\n");
    let c = config::parse::<CentralConfig>(&good, Path::new("/etc/gridedge")).unwrap();
    let pg = c.storage.postgres.unwrap();
    assert_eq!(pg.url.env.as_deref(), Some("GRIDEDGE_PG_URL"));
    assert_eq!((pg.pool_size, pg.ca_file), (16, None));
    // A URL written into the file (it may hold a password) is not a secret reference.
    let inline = format!("{base}postgres = {{ url = \"postgres://u:pw@h/db\" }}\n");
    assert!(config::parse::<CentralConfig>(&inline, Path::new("/")).is_err());
    let bad = format!(
        "{base}postgres = {{ url = {{ file = \"pg-url\" }}, pool_size = 0, ca_file = \"/nonexistent/ca.pem\" }}\n"
    );
    let issues = config::parse::<CentralConfig>(&bad, Path::new("/"))
        .unwrap_err()
        .issues();
    assert_eq!(
        issues,
        vec![
            "storage.postgres.url.file: /pg-url: No such file or directory (os error 2)",
            "storage.postgres.pool_size: must be 1 to 256",
            "storage.postgres.ca_file: /nonexistent/ca.pem is not a file"
        ]
    );
}

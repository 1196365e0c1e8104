//! What `deploy/` ships agrees with the code: example configs, systemd units, the bootstrap.

use std::path::Path;

use firmware_config::config::{self, CentralConfig, GatewayConfig};
use firmware_config::examples;
use gridedge_tests::workspace_root;

fn read(rel: &str) -> String {
    std::fs::read_to_string(workspace_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn deploy_configs_are_exactly_what_fwcfg_example_prints() {
    assert_eq!(
        read("deploy/gateway.toml"),
        examples::GATEWAY,
        "run: fwcfg example gateway > deploy/gateway.toml"
    );
    assert_eq!(
        read("deploy/central.toml"),
        examples::CENTRAL,
        "run: fwcfg example central > deploy/central.toml"
    );
    // The certificates and keys they name are on the machines they are for.
    let _: GatewayConfig =
        config::parse_elsewhere(&read("deploy/gateway.toml"), &workspace_root()).unwrap();
    let _: CentralConfig =
        config::parse_elsewhere(&read("deploy/central.toml"), &workspace_root()).unwrap();
}

fn unit_value<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .collect()
}

#[test]
fn systemd_units_run_the_binaries_on_their_configs_with_hardening() {
    for (role, storage) in [
        ("gateway", "/var/lib/gridedge/gateway"),
        ("central", "/var/lib/gridedge/central"),
    ] {
        let unit = read(&format!("deploy/systemd/gridedge-{role}.service"));
        assert_eq!(
            unit_value(&unit, "ExecStart"),
            [format!("/usr/local/bin/{role} --config /etc/gridedge/{role}.toml").as_str()]
        );
        assert_eq!(
            unit_value(&unit, "ExecStartPre"),
            [
                format!("/usr/local/bin/fwcfg check --role {role} /etc/gridedge/{role}.toml")
                    .as_str()
            ]
        );
        // The state folder systemd creates is the one the example config names.
        let state = unit_value(&unit, "StateDirectory");
        assert_eq!(state.len(), 1);
        assert_eq!(Path::new("/var/lib").join(state[0]), Path::new(storage));
        let example = if role == "gateway" {
            examples::GATEWAY
        } else {
            examples::CENTRAL
        };
        assert!(
            example.contains(&format!("dir = \"{storage}\"")),
            "{role} example storage"
        );
        for hardening in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "RestartPreventExitStatus=2",
        ] {
            assert!(unit.contains(hardening), "{role} unit lacks {hardening}");
        }
        assert_eq!(unit_value(&unit, "User"), ["gridedge"]);
    }
}

#[test]
fn bootstrap_is_safe_to_run_again() {
    // The suite's own run installed everything; a second run must change nothing.
    let out = std::process::Command::new("bash")
        .arg(workspace_root().join("deploy/bootstrap.sh"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("system packages present"), "{stdout}");
}

#[test]
fn ci_runs_the_readme_test_command() {
    let readme = read("README.md");
    let ci = read(".ci/run");
    assert!(
        readme.contains("bash deploy/test.sh"),
        "README must give the test command"
    );
    assert!(
        ci.lines().any(|l| l.trim() == "bash deploy/test.sh"),
        ".ci/run must run it"
    );
    assert!(
        readme.contains("bash deploy/demo.sh"),
        "README must give the demo command"
    );
}

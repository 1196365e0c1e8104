//! The `fwcfg` command as an installer runs it.

use std::io::Write;
use std::process::{Command, Stdio};

fn fwcfg(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fwcfg"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn example_gateway_piped_into_check_passes() {
    for role in ["gateway", "central"] {
        let (ok, example, _) = fwcfg(&["example", role], "");
        assert!(ok);
        let (ok, out, err) = fwcfg(&["check", "-"], &example);
        assert!(ok, "{role}: {err}");
        assert!(out.contains(": ok: "), "{out}");
    }
}

#[test]
fn check_prints_every_problem_and_fails() {
    let (_, example, _) = fwcfg(&["example", "gateway"], "");
    let bad = example
        .replace(
            "rtsp://192.0.2.10:554/Streaming/Channels/101",
            "http://192.0.2.10/",
        )
        .replace("id = \"security-room\"", "id = \"hall-entrance\"")
        .replacen(
            "interval = \"10s\"           # a fresh",
            "interval = \"0s\"           # a fresh",
            1,
        );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, bad).unwrap();
    let (ok, _, err) = fwcfg(&["check", file.to_str().unwrap()], "");
    assert!(!ok);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert!(
        lines
            .iter()
            .any(|l| l
                .ends_with("cameras[1].id: duplicate id \"hall-entrance\" (also cameras[0].id)")),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("cameras[0].url: scheme must be rtsp, not http")),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("cameras[0].snapshot.interval: must be greater than zero")),
        "{err}"
    );
    assert!(lines[3].ends_with("3 problem(s)"), "{err}");
}

#[test]
fn check_refuses_a_document_of_unknown_role() {
    let (ok, _, err) = fwcfg(&["check", "-"], "[something]\nx = 1\n");
    assert!(!ok);
    assert!(err.contains("cannot tell the role"), "{err}");
}

#[test]
fn certs_make_a_ca_a_server_and_clients_and_refuse_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (ok, out, err) = fwcfg(&["certs", "ca", d], "");
    assert!(ok, "{err}");
    assert!(out.contains("ca.pem"));
    let (ok, _, err) = fwcfg(
        &[
            "certs",
            "server",
            d,
            "broker",
            "--host",
            "localhost",
            "--host",
            "127.0.0.1",
        ],
        "",
    );
    assert!(ok, "{err}");
    let (ok, out, err) = fwcfg(&["certs", "client", d, "gw-hongxing-01"], "");
    assert!(ok, "{err}");
    assert!(out.contains("gw-hongxing-01.key"));
    let (ok, _, err) = fwcfg(&["certs", "client", d, "gw-hongxing-01"], "");
    assert!(!ok);
    assert!(err.contains("refusing to overwrite"), "{err}");
    let (ok, _, err) = fwcfg(&["certs", "client", d, "Bad/Id"], "");
    assert!(!ok && err.contains("not a valid name"), "{err}");
}

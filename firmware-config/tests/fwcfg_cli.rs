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
        // The files it names are on the machine it is for.
        let (ok, out, err) = fwcfg(&["check", "--elsewhere", "-"], &example);
        assert!(ok, "{role}: {err}");
        let (ok, _, err) = fwcfg(&["check", "-"], &example);
        assert!(
            !ok && err.contains("No such file"),
            "{role}: here the files are missing: {err}"
        );
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
    let (ok, _, err) = fwcfg(&["check", "--elsewhere", file.to_str().unwrap()], "");
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

#[test]
fn bundles_are_signed_verified_and_tampering_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let d = |f: &str| dir.path().join(f).display().to_string();
    let (ok, out, err) = fwcfg(&["certs", "bundle-key", &d("keys")], "");
    assert!(ok, "{err}");
    assert!(out.contains("central-signing.pub"), "{out}");
    let (ok, _, err) = fwcfg(&["certs", "bundle-key", &d("keys")], "");
    assert!(!ok && err.contains("refusing to overwrite"), "{err}");

    let (_, example, _) = fwcfg(&["example", "gateway"], "");
    std::fs::write(d("gateway.toml"), &example).unwrap();
    let key = d("keys/central-signing.key");
    let public = d("keys/central-signing.pub");
    let (ok, _, err) = fwcfg(
        &[
            "sign",
            "--key",
            &key,
            "--gateway",
            "gw-hongxing-01",
            "--version",
            "2",
            "--note",
            "add a camera",
            "--out",
            &d("b.json"),
            &d("gateway.toml"),
        ],
        "",
    );
    assert!(ok, "{err}");
    let (ok, out, err) = fwcfg(&["verify", "--key", &public, &d("b.json")], "");
    assert!(ok, "{err}");
    assert!(
        out.contains("gateway gw-hongxing-01 version 2") && out.contains("(add a camera)"),
        "{out}"
    );

    // One changed byte in the body breaks the signature.
    let text = std::fs::read_to_string(d("b.json")).unwrap();
    std::fs::write(
        d("t.json"),
        text.replace("\\\"version\\\":2", "\\\"version\\\":3"),
    )
    .unwrap();
    assert_ne!(std::fs::read_to_string(d("t.json")).unwrap(), text);
    let (ok, _, err) = fwcfg(&["verify", "--key", &public, &d("t.json")], "");
    assert!(!ok && err.contains("signature does not verify"), "{err}");

    // Another gateway's id in the content, and bad terminal settings, are refused before signing.
    let (ok, _, err) = fwcfg(
        &[
            "sign",
            "--key",
            &key,
            "--gateway",
            "gw-other",
            "--version",
            "1",
            &d("gateway.toml"),
        ],
        "",
    );
    assert!(!ok && err.contains("gateway.id"), "{err}");
    std::fs::write(d("kiosk.toml"), "volume = 140\nlocale = \"fr\"\n").unwrap();
    let (ok, _, err) = fwcfg(
        &[
            "sign",
            "--key",
            &key,
            "--gateway",
            "gw-hongxing-01",
            "--terminal",
            "kiosk-hall-1",
            "--version",
            "1",
            &d("kiosk.toml"),
        ],
        "",
    );
    assert!(
        !ok && err.contains("volume: ") && err.contains("locale: "),
        "{err}"
    );
    std::fs::write(
        d("kiosk.toml"),
        "volume = 30\nrequired_peripherals = [\"printer\"]\n",
    )
    .unwrap();
    let (ok, out, err) = fwcfg(
        &[
            "sign",
            "--key",
            &key,
            "--gateway",
            "gw-hongxing-01",
            "--terminal",
            "kiosk-hall-1",
            "--version",
            "1",
            &d("kiosk.toml"),
        ],
        "",
    );
    assert!(ok, "{err}");
    std::fs::write(d("k.json"), out).unwrap();
    let (ok, out, _) = fwcfg(&["verify", "--key", &public, &d("k.json")], "");
    assert!(
        ok && out.contains("terminal kiosk-hall-1 of gateway gw-hongxing-01"),
        "{out}"
    );
}

#[test]
fn data_check_accepts_the_sample_and_names_every_bad_row() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/sample-data");
    let (ok, out, err) = fwcfg(&["data", "check", sample], "");
    assert!(ok, "{err}");
    assert!(
        out.contains("10 base grid(s)") && out.contains("hash "),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    for f in [
        "grids.csv",
        "grid_staff.csv",
        "boundaries.geojson",
        "service_items.json",
    ] {
        std::fs::copy(format!("{sample}/{f}"), dir.path().join(f)).unwrap();
    }
    let grids = std::fs::read_to_string(dir.path().join("grids.csv")).unwrap()
        + "11019900100001001,重复,base,11019900100001,400,\n";
    std::fs::write(dir.path().join("grids.csv"), grids).unwrap();
    std::fs::write(
        dir.path().join("party.csv"),
        "code,name,kind,parent,grids\nDW12345678,支部,党小组,DW99999999,110199001999\n",
    )
    .unwrap();
    let (ok, _, err) = fwcfg(&["data", "check", &dir.path().display().to_string()], "");
    assert!(!ok);
    for want in [
        "11019900100001001 code: duplicate code",
        "DW12345678 kind: \"党小组\" is not a kind",
        "DW12345678 parent: \"DW99999999\" is not a party organisation code",
        "DW12345678 grids: \"110199001999\" is not a grid code",
    ] {
        assert!(err.contains(want), "missing {want:?} in {err}");
    }
}

#[test]
fn cleartext_listeners_are_warned() {
    let (_, gateway, _) = fwcfg(&["example", "gateway"], "");
    // The example serves its LAN on 0.0.0.0 without [http] tls: it passes, with a warning.
    let (ok, out, err) = fwcfg(&["check", "--elsewhere", "-"], &gateway);
    assert!(ok, "{err}");
    assert!(out.contains(": ok: "), "{out}");
    assert!(
        err.contains("warning: http.tls: 0.0.0.0:8080 is reachable from the network without TLS"),
        "{err}"
    );
    // On loopback, or with TLS, no warning.
    let local = gateway.replace("0.0.0.0:8080", "127.0.0.1:8080");
    let (ok, _, err) = fwcfg(&["check", "--elsewhere", "-"], &local);
    assert!(ok && !err.contains("warning"), "{err}");
    // Plain MQTT to another host is warned too.
    let plain = local.replace(
        "broker = \"mqtts://central.street.example:8883\"\ntls = {",
        "broker = \"mqtt://central.street.example:1883\"\n# tls = {",
    );
    let (ok, _, err) = fwcfg(&["check", "--elsewhere", "-"], &plain);
    assert!(ok, "{err}");
    assert!(
        err.contains("warning: uplink.broker: mqtt://central.street.example:1883 is plain MQTT"),
        "{err}"
    );
    // Central's development switch is warned.
    let (_, central, _) = fwcfg(&["example", "central"], "");
    let dev = central.replace(
        "# allow_plain_gateways = false",
        "allow_plain_gateways = true",
    );
    let (ok, _, err) = fwcfg(&["check", "--elsewhere", "-"], &dev);
    assert!(ok, "{err}");
    assert!(
        err.contains("warning: broker.embedded.allow_plain_gateways"),
        "{err}"
    );
}

//! `fwcfg`: prints example configs and checks config files with the services' own validation.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use firmware_config::config::{self, CentralConfig, ConfigError, GatewayConfig};
use firmware_config::examples;

#[derive(Parser)]
#[command(name = "fwcfg", version, about = "GridEdge configuration tool")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a complete, commented example config.
    Example { role: Role },
    /// Make TLS certificates: a CA, the broker's server certificate, client certificates.
    #[command(subcommand)]
    Certs(Certs),
    /// Sign a configuration bundle: a whole gateway.toml, or a terminal's settings (TOML).
    /// The content is checked against the schema first; the bundle (JSON) goes to stdout.
    Sign {
        /// Central's private bundle-signing key (`fwcfg certs bundle-key`).
        #[arg(long)]
        key: PathBuf,
        /// The gateway the bundle is for.
        #[arg(long)]
        gateway: String,
        /// A terminal of that gateway; the file is then the terminal's settings.
        #[arg(long)]
        terminal: Option<String>,
        /// The bundle's version; must be higher than the one the target has applied.
        #[arg(long)]
        version: u64,
        /// Why the change is made (kept in the audit trail).
        #[arg(long, default_value = "")]
        note: String,
        /// Write the bundle here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        file: PathBuf,
    },
    /// Verify a bundle's signature with the trusted public key and check its content.
    Verify {
        /// The bundle-signing public key (`bundle-signing.pub`).
        #[arg(long)]
        key: PathBuf,
        bundle: PathBuf,
    },
    /// Master data for kiosks (grid, party organisations, service items, content).
    #[command(subcommand)]
    Data(Data),
    /// Check a config file (or `-` for standard input); prints every problem found.
    Check {
        file: PathBuf,
        /// Which config it is; guessed from its `[gateway]` or `[central]` table when absent.
        #[arg(long)]
        role: Option<Role>,
        /// The config will run on another machine: check everything but that the files it
        /// names (certificates, keys, tokens) exist here.
        #[arg(long)]
        elsewhere: bool,
    },
}

#[derive(Subcommand)]
enum Certs {
    /// Create a new CA (ca.pem, ca.key) in DIR. Keep ca.key off central's host.
    Ca {
        dir: PathBuf,
        #[arg(long, default_value = "GridEdge street CA")]
        name: String,
        /// Days it is valid.
        #[arg(long, default_value_t = firmware_config::certs::DEFAULT_CA_DAYS)]
        days: i64,
    },
    /// Issue the broker's server certificate (NAME.pem, NAME.key) from the CA in DIR.
    Server {
        dir: PathBuf,
        name: String,
        /// Host names or IP addresses the broker is reached at (repeat).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// Days it is valid.
        #[arg(long, default_value_t = firmware_config::certs::DEFAULT_SERVER_DAYS)]
        days: i64,
    },
    /// Issue a client certificate whose common name is ID: a gateway's id, or `central`.
    Client {
        dir: PathBuf,
        id: String,
        /// Days it is valid.
        #[arg(long, default_value_t = firmware_config::certs::DEFAULT_CLIENT_DAYS)]
        days: i64,
    },
    /// Issue a new certificate for ID with the key it has (ID.pem is replaced, the old one
    /// kept as ID.pem.previous): copy ID.pem to the gateway, which takes it at its next
    /// reconnect.
    Renew {
        dir: PathBuf,
        id: String,
        /// Days it is valid.
        #[arg(long, default_value_t = firmware_config::certs::DEFAULT_CLIENT_DAYS)]
        days: i64,
    },
    /// Revoke a certificate (a stolen gateway's): adds it to DIR/revoked.json and writes
    /// DIR/crl.pem anew, for central (`[identity] crl_file`) and Mosquitto (`crlfile`).
    Revoke {
        dir: PathBuf,
        /// The certificate file to revoke.
        cert: PathBuf,
        /// Why, for the record.
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
    /// Write DIR/crl.pem again with what is revoked (a CRL is valid for 30 days: run this
    /// from a timer).
    Crl { dir: PathBuf },
    /// Make central's Ed25519 signing key pair (central-signing.key, central-signing.pub) in
    /// DIR. Central signs every message to gateways with it; gateways trust the .pub file
    /// (`uplink.central_key_file`). Central makes one in its storage folder when it has none.
    #[command(alias = "bundle-key")]
    SigningKey { dir: PathBuf },
}

#[derive(Subcommand)]
enum Data {
    /// Check a data set folder (grids.csv, grid_staff.csv, boundaries.geojson, party.csv,
    /// service_items.json or .csv, content.csv and its files): prints every problem, by file,
    /// line and field, or a summary and the data set's hash.
    Check { dir: PathBuf },
}

#[derive(Clone, Copy, ValueEnum)]
enum Role {
    Gateway,
    Central,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Example { role } => {
            print!(
                "{}",
                match role {
                    Role::Gateway => examples::GATEWAY,
                    Role::Central => examples::CENTRAL,
                }
            );
            ExitCode::SUCCESS
        }
        Command::Check {
            file,
            role,
            elsewhere,
        } => check(&file, role, elsewhere),
        Command::Certs(c) => certs(c),
        Command::Sign {
            key,
            gateway,
            terminal,
            version,
            note,
            out,
            file,
        } => sign(
            &key,
            gateway,
            terminal,
            version,
            note,
            out.as_deref(),
            &file,
        ),
        Command::Verify { key, bundle } => verify(&key, &bundle),
        Command::Data(Data::Check { dir }) => data_check(&dir),
    }
}

fn certs(c: Certs) -> ExitCode {
    use firmware_config::certs::Authority;
    let done = match c {
        Certs::Ca { dir, name, days } => {
            Authority::create_for(&dir, &name, days).map(|ca| vec![ca.ca_file()])
        }
        Certs::Server {
            dir,
            name,
            hosts,
            days,
        } => Authority::load(&dir)
            .and_then(|ca| ca.server_for(&name, &hosts, days))
            .map(|f| vec![f.cert_file, f.key_file]),
        Certs::Client { dir, id, days } => Authority::load(&dir)
            .and_then(|ca| ca.client_valid(&id, 0, days))
            .map(|f| vec![f.cert_file, f.key_file]),
        Certs::Renew { dir, id, days } => Authority::load(&dir)
            .and_then(|ca| ca.renew(&id, days))
            .map(|f| vec![f.cert_file]),
        Certs::Revoke { dir, cert, reason } => Authority::load(&dir)
            .and_then(|ca| ca.revoke(&cert, &reason))
            .map(|crl| vec![crl]),
        Certs::Crl { dir } => Authority::load(&dir)
            .and_then(|ca| ca.refresh_crl())
            .map(|crl| vec![crl]),
        Certs::SigningKey { dir } => {
            firmware_config::bundle::create_key_files(&dir, "central-signing")
                .map(|(k, p)| vec![k, p])
        }
    };
    match done {
        Ok(files) => {
            for f in files {
                println!("wrote {}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fwcfg certs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(file: &Path, role: Option<Role>, elsewhere: bool) -> ExitCode {
    fn parse<T: config::Document>(
        text: &str,
        base: &Path,
        elsewhere: bool,
    ) -> Result<T, ConfigError> {
        if elsewhere {
            config::parse_elsewhere(text, base)
        } else {
            config::parse(text, base)
        }
    }
    let stdin = file == Path::new("-");
    let name = if stdin {
        "<stdin>".to_owned()
    } else {
        file.display().to_string()
    };
    let text = if stdin {
        let mut s = String::new();
        match std::io::stdin().read_to_string(&mut s) {
            Ok(_) => s,
            Err(e) => return fail(&name, &[format!("cannot read standard input: {e}")]),
        }
    } else {
        match std::fs::read_to_string(file) {
            Ok(s) => s,
            Err(e) => return fail(&name, &[format!("cannot read: {e}")]),
        }
    };
    let base = if stdin {
        PathBuf::from(".")
    } else {
        file.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    };
    let Some(role) = role.or_else(|| guess_role(&text)) else {
        return fail(
            &name,
            &["cannot tell the role: no [gateway] or [central] table; pass --role".to_owned()],
        );
    };
    use firmware_config::config::Document;
    let summary: Result<(String, Vec<config::Issue>), ConfigError> = match role {
        Role::Gateway => parse::<GatewayConfig>(&text, &base, elsewhere).map(|c| {
            (
                format!(
                    "gateway {} at site {}, {} camera(s), {} terminal(s)",
                    c.gateway.id,
                    c.site.id,
                    c.cameras.len(),
                    c.terminals.len()
                ),
                c.warnings(),
            )
        }),
        Role::Central => parse::<CentralConfig>(&text, &base, elsewhere).map(|c| {
            let broker = if c.broker.embedded.is_some() {
                "embedded"
            } else {
                "external"
            };
            (
                format!("central {} with the {broker} broker", c.central.id),
                c.warnings(),
            )
        }),
    };
    match summary {
        Ok((s, warnings)) => {
            // Warnings go to stderr: the config works, but leaves something open.
            for w in &warnings {
                eprintln!("{name}: warning: {w}");
            }
            println!("{name}: ok: {s}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&name, &e.issues()),
    }
}

fn guess_role(text: &str) -> Option<Role> {
    let table: toml::Table = text.parse().ok()?;
    match (table.contains_key("gateway"), table.contains_key("central")) {
        (true, false) => Some(Role::Gateway),
        (false, true) => Some(Role::Central),
        _ => None,
    }
}

fn fail(name: &str, issues: &[String]) -> ExitCode {
    for issue in issues {
        eprintln!("{name}: {issue}");
    }
    eprintln!("{name}: {} problem(s)", issues.len());
    ExitCode::FAILURE
}

fn sign(
    key: &Path,
    gateway: String,
    terminal: Option<String>,
    version: u64,
    note: String,
    out: Option<&Path>,
    file: &Path,
) -> ExitCode {
    use firmware_config::bundle::{BundleBody, Content, SigningKey, Target};
    let name = file.display().to_string();
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return fail(&name, &[format!("cannot read: {e}")]),
    };
    let content = match &terminal {
        None => Content::Gateway { toml: text },
        Some(_) => match config::TerminalSettings::parse(&text) {
            Ok(settings) => Content::Terminal { settings },
            Err(e) => return fail(&name, &e.issues()),
        },
    };
    let body = BundleBody {
        target: Target { gateway, terminal },
        version,
        issued: time::OffsetDateTime::now_utc(),
        note,
        content,
    };
    let base = file.parent().unwrap_or(Path::new("."));
    if let Err(issues) = body.check(base, false) {
        return fail(&name, &issues);
    }
    let signed = match SigningKey::load(key).and_then(|k| k.sign(&body)) {
        Ok(s) => s,
        Err(e) => return fail(&key.display().to_string(), &[e.to_string()]),
    };
    let json = signed.to_json() + "\n";
    match out {
        Some(path) => {
            if let Err(e) = std::fs::write(path, json) {
                return fail(&path.display().to_string(), &[format!("cannot write: {e}")]);
            }
            eprintln!(
                "signed {} version {} with key {} into {}",
                body.target,
                body.version,
                signed.key,
                path.display()
            );
        }
        None => print!("{json}"),
    }
    ExitCode::SUCCESS
}

fn verify(key: &Path, bundle: &Path) -> ExitCode {
    use firmware_config::bundle::{SignedBundle, VerifyingKey};
    let name = bundle.display().to_string();
    let trusted = match VerifyingKey::load(key) {
        Ok(k) => k,
        Err(e) => return fail(&key.display().to_string(), &[e.to_string()]),
    };
    let bytes = match std::fs::read(bundle) {
        Ok(b) => b,
        Err(e) => return fail(&name, &[format!("cannot read: {e}")]),
    };
    let body = match SignedBundle::parse(&bytes).and_then(|b| trusted.verify(&b)) {
        Ok(body) => body,
        Err(e) => return fail(&name, &[e.to_string()]),
    };
    if let Err(issues) = body.check(bundle.parent().unwrap_or(Path::new(".")), false) {
        return fail(&name, &issues);
    }
    println!(
        "{name}: ok: {} version {} issued {}{}",
        body.target,
        body.version,
        body.issued
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        if body.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", body.note)
        }
    );
    ExitCode::SUCCESS
}

fn data_check(dir: &Path) -> ExitCode {
    use firmware_config::masterdata;
    let name = dir.display().to_string();
    let dataset = masterdata::load_dir(dir)
        .and_then(|src| src.read())
        .and_then(|d| {
            let problems = masterdata::validate(&d);
            if problems.is_empty() {
                Ok(d)
            } else {
                Err(problems)
            }
        });
    match dataset {
        Ok(d) => {
            println!("{name}: ok: {}; hash {}", d.summary(), d.hash());
            ExitCode::SUCCESS
        }
        Err(problems) => fail(
            &name,
            &problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ),
    }
}

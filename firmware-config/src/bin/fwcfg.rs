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
    /// Check a config file (or `-` for standard input); prints every problem found.
    Check {
        file: PathBuf,
        /// Which config it is; guessed from its `[gateway]` or `[central]` table when absent.
        #[arg(long)]
        role: Option<Role>,
    },
}

#[derive(Subcommand)]
enum Certs {
    /// Create a new CA (ca.pem, ca.key) in DIR.
    Ca {
        dir: PathBuf,
        #[arg(long, default_value = "GridEdge street CA")]
        name: String,
    },
    /// Issue the broker's server certificate (NAME.pem, NAME.key) from the CA in DIR.
    Server {
        dir: PathBuf,
        name: String,
        /// Host names or IP addresses the broker is reached at (repeat).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
    },
    /// Issue a client certificate whose common name is ID: a gateway's id, or `central`.
    Client { dir: PathBuf, id: String },
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
        Command::Check { file, role } => check(&file, role),
        Command::Certs(c) => certs(c),
    }
}

fn certs(c: Certs) -> ExitCode {
    use firmware_config::certs::Authority;
    let done = match c {
        Certs::Ca { dir, name } => Authority::create(&dir, &name).map(|ca| vec![ca.ca_file()]),
        Certs::Server { dir, name, hosts } => Authority::load(&dir)
            .and_then(|ca| ca.server(&name, &hosts))
            .map(|f| vec![f.cert_file, f.key_file]),
        Certs::Client { dir, id } => Authority::load(&dir)
            .and_then(|ca| ca.client(&id))
            .map(|f| vec![f.cert_file, f.key_file]),
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

fn check(file: &Path, role: Option<Role>) -> ExitCode {
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
    let summary: Result<String, ConfigError> = match role {
        Role::Gateway => config::parse::<GatewayConfig>(&text, &base).map(|c| {
            format!(
                "gateway {} at site {}, {} camera(s), {} terminal(s)",
                c.gateway.id,
                c.site.id,
                c.cameras.len(),
                c.terminals.len()
            )
        }),
        Role::Central => config::parse::<CentralConfig>(&text, &base).map(|c| {
            let broker = if c.broker.embedded.is_some() {
                "embedded"
            } else {
                "external"
            };
            format!("central {} with the {broker} broker", c.central.id)
        }),
    };
    match summary {
        Ok(s) => {
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

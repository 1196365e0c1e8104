//! `central --config central.toml`: runs the street's hub until SIGINT/SIGTERM.
//! `central data push DIR --url http://central:8090`: publishes a master data set to it, with
//! an administrator's API token (`--token` or `GRIDEDGE_API_TOKEN`).
//! `central operator hash` / `central operator token`: what central.toml keeps of a password
//! or an API token.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use firmware_config::config::CentralConfig;

#[derive(Parser)]
#[command(
    name = "central",
    version,
    about = "GridEdge central hub of the street command centre"
)]
struct Args {
    /// Central's config file (see `fwcfg example central`).
    #[arg(long, short, default_value = "/etc/gridedge/central.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Master data for kiosks.
    #[command(subcommand)]
    Data(Data),
    /// Operator console logins.
    #[command(subcommand)]
    Operator(OperatorCmd),
}

#[derive(Subcommand)]
enum OperatorCmd {
    /// Reads a password on standard input and prints its Argon2id hash for an
    /// `[[operators]]` entry of central.toml (`password_hash`).
    Hash,
    /// Makes a new API token for a script or tool: prints the token (give it to the tool) and
    /// the `[[api_tokens]]` entry for central.toml (which keeps only its SHA-256).
    Token {
        /// Who holds it, as the audit trail will name it.
        #[arg(long)]
        name: String,
        /// operator, supervisor or administrator (publishing data needs administrator).
        #[arg(long, default_value = "administrator")]
        role: String,
    },
}

#[derive(Subcommand)]
enum Data {
    /// Checks a data set folder here (as `fwcfg data check` does), then publishes it to a
    /// running central as a new version; a data set with problems is refused whole.
    Push {
        dir: PathBuf,
        /// Central's HTTP API.
        #[arg(long, default_value = "http://127.0.0.1:8090")]
        url: String,
        /// Who publishes it (kept with the version).
        #[arg(long, default_value = "cli")]
        by: String,
        /// Why (kept with the version).
        #[arg(long, default_value = "")]
        note: String,
        /// An administrator's API token; default: the GRIDEDGE_API_TOKEN environment variable.
        #[arg(long)]
        token: Option<String>,
    },
}

// glibc's allocator, as the gateway: measured with bench-central (1,000 gateways), mimalloc
// held twice the resident memory (534 against 222 MiB in a quick run) for no gain in CPU or throughput.

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Some(Command::Data(Data::Push {
            dir,
            url,
            by,
            note,
            token,
        })) => {
            let token = token.or_else(|| std::env::var("GRIDEDGE_API_TOKEN").ok());
            return push(&dir, &url, &by, &note, token.as_deref()).await;
        }
        Some(Command::Operator(OperatorCmd::Hash)) => return hash_password(),
        Some(Command::Operator(OperatorCmd::Token { name, role })) => {
            return new_token(&name, &role)
        }
        None => {}
    }
    firmware_config::runtime::run_main(
        "central",
        &args.config,
        |cfg: CentralConfig, token| async move { central::start(cfg, token).await?.wait().await },
    )
    .await
}

fn hash_password() -> ExitCode {
    let mut password = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut password) {
        eprintln!("central operator hash: cannot read the password: {e}");
        return ExitCode::FAILURE;
    }
    let password = password.trim_end_matches(['\r', '\n']);
    if password.chars().count() < 8 {
        eprintln!("central operator hash: a password has at least 8 characters");
        return ExitCode::FAILURE;
    }
    match central::operators::hash_password(password) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("central operator hash: {e}");
            ExitCode::FAILURE
        }
    }
}

fn new_token(name: &str, role: &str) -> ExitCode {
    if central::operators::Role::parse(role).is_none() {
        eprintln!("central operator token: {role:?} is not a role; use operator, supervisor or administrator");
        return ExitCode::FAILURE;
    }
    if firmware_config::ids::GatewayId::new(name).is_err() {
        eprintln!("central operator token: {name:?}: use lowercase letters, digits, - and _");
        return ExitCode::FAILURE;
    }
    let (token, sha) = central::operators::new_api_token();
    println!("{token}");
    eprintln!("give the line above to the tool; add this to central.toml and restart central:\n");
    eprintln!("[[api_tokens]]\nname = \"{name}\"\nrole = \"{role}\"\ntoken_sha256 = \"{sha}\"");
    ExitCode::SUCCESS
}

async fn push(
    dir: &std::path::Path,
    url: &str,
    by: &str,
    note: &str,
    token: Option<&str>,
) -> ExitCode {
    use firmware_config::masterdata;
    let name = dir.display().to_string();
    let fail = |lines: Vec<String>| {
        for l in &lines {
            eprintln!("{name}: {l}");
        }
        eprintln!("{name}: {} problem(s); nothing was published", lines.len());
        ExitCode::FAILURE
    };
    let sources = match masterdata::load_dir(dir) {
        Ok(s) => s,
        Err(p) => return fail(p.iter().map(ToString::to_string).collect()),
    };
    let checked = sources
        .read()
        .map(|d| masterdata::validate(&d))
        .unwrap_or_else(|p| p);
    if !checked.is_empty() {
        return fail(checked.iter().map(ToString::to_string).collect());
    }
    let body = central::api::masterdata::ImportRequest::from_sources(&sources, by, note);
    let client = match reqwest::Client::builder().no_proxy().build() {
        Ok(c) => c,
        Err(e) => return fail(vec![e.to_string()]),
    };
    let Some(token) = token else {
        return fail(vec![
            "no API token: pass --token or set GRIDEDGE_API_TOKEN (make one with `central operator token`)".into(),
        ]);
    };
    let answer = client
        .post(format!("{}/api/v1/masterdata", url.trim_end_matches('/')))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await;
    let answer = match answer {
        Ok(a) => a,
        Err(e) => return fail(vec![format!("cannot reach central at {url}: {e}")]),
    };
    let status = answer.status();
    let v: serde_json::Value = answer.json().await.unwrap_or_default();
    if status.is_success() {
        let new = if v["new"] == true {
            "published as version"
        } else {
            "unchanged: already version"
        };
        println!(
            "{name}: {new} {} ({}); hash {}",
            v["version"],
            v["summary"].as_str().unwrap_or(""),
            v["hash"].as_str().unwrap_or("")
        );
        ExitCode::SUCCESS
    } else {
        let mut lines: Vec<String> = v["problems"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| p["text"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if lines.is_empty() {
            lines.push(format!(
                "central answered {status}: {}",
                v["error"].as_str().unwrap_or("")
            ));
        }
        fail(lines)
    }
}

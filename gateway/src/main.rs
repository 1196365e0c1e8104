//! `gateway --config gateway.toml`: runs the gateway of one service centre until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use firmware_config::config::GatewayConfig;

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "GridEdge gateway of one community service centre"
)]
struct Args {
    /// The gateway's config file (see `fwcfg example gateway`).
    #[arg(long, short, default_value = "/etc/gridedge/gateway.toml")]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    firmware_config::runtime::run_main(
        "gateway",
        &args.config,
        |cfg: GatewayConfig, token| async move { gateway::start(cfg, token).await?.wait().await },
    )
    .await
}

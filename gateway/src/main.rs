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

fn main() -> ExitCode {
    let args = Args::parse();
    // One async worker: the gateway's async work is light I/O (heavy work — decoding, disk
    // writes — has threads of its own), and a second worker mostly wakes up to find nothing:
    // measured with 10,000 heartbeating terminals, it cost a quarter more CPU for no gain in
    // latency. TOKIO_WORKER_THREADS overrides it.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(1);
    }
    let runtime = match builder.enable_all().thread_name("gateway-rt").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gateway: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(firmware_config::runtime::run_main(
        "gateway",
        &args.config,
        |cfg: GatewayConfig, token| async move { gateway::start(cfg, token).await?.wait().await },
    ))
}

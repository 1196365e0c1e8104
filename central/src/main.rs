//! `central --config central.toml`: runs the street's hub until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
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
}

// mimalloc: the outbox and the MQTT path allocate many small buffers from several threads;
// glibc's arenas fragment under that and cost both CPU and resident memory.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    firmware_config::runtime::run_main(
        "central",
        &args.config,
        |cfg: CentralConfig, token| async move { central::start(cfg, token).await?.wait().await },
    )
    .await
}

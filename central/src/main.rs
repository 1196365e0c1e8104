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

// mimalloc: central decodes and stores many small buffers from several threads. (The gateway
// keeps glibc's allocator: measured, mimalloc tripled its resident memory for little gain.)
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

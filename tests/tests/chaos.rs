//! A short chaos run on the real binaries (`bench-chaos --gridedge-only` in small): kill -9 of
//! the gateway, of central, of both, and WAN cuts at random moments under a steady load; then
//! every event the gateway acknowledged must be at central, once.
//!
//! The seed is random and printed; `CHAOS_SEED=S` plays the same plan again.

use std::time::Duration;

use gridedge_tests::chaos::{accounting_table, plan, run_plan, Fault, GridEdgeRig, Rig};
use gridedge_tests::init_test_logging;

const CYCLES: usize = 8;
const RATE: f64 = 500.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_wan_cuts_at_random_moments_lose_and_duplicate_nothing() {
    init_test_logging();
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from(rand::random::<u32>()));
    eprintln!("chaos: seed {seed} (repeat with CHAOS_SEED={seed})");
    let mut rig = GridEdgeRig::start(RATE).await.unwrap();
    let played = match run_plan(&mut rig, "gridedge", &plan(seed, CYCLES), 4).await {
        Ok(p) => p,
        Err(e) => panic!("seed {seed}: {e:#}\n{}", rig.logs(80)),
    };
    let a = rig
        .finish(&played, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: {e:#}\n{}", rig.logs(80)));
    eprintln!("{}", accounting_table(&[("GridEdge", &a)]));
    let failed = format!("seed {seed}\n{}", rig.logs(80));

    for fault in Fault::ALL {
        assert!(
            a.cycles.get(&fault).copied().unwrap_or(0) >= 1,
            "{} never happened; {failed}",
            fault.label()
        );
    }
    assert!(
        a.acked >= 1000,
        "too few events acked to prove anything: {}; {failed}",
        a.acked
    );
    assert_eq!(
        a.lost, 0,
        "acked, not stored: {:?}; {failed}",
        a.lost_sample
    );
    assert_eq!(
        a.duplicated, 0,
        "stored more than once: {:?}; {failed}",
        a.duplicated_sample
    );
    assert_eq!(a.stored_refused, 0, "stored though refused; {failed}");
    assert_eq!(a.unexpected, 0, "stored, never sent; {failed}");
    assert_eq!(a.misnumbered, 0, "stored under another's number; {failed}");
    assert!(
        a.drain.is_some_and(|d| d.complete),
        "the gateway's outbox never emptied: {:?}; {failed}",
        a.drain
    );
}

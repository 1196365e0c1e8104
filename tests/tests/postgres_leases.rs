//! Per-gateway leases in a real PostgreSQL: one replica holds each gateway; when it stops
//! renewing (it died), another takes its gateways within the lease time, with a new
//! generation; a replica that stops cleanly hands them over at once.

use std::time::{Duration, Instant};

use central::pg::{self, leases::Leases};
use gridedge_tests::postgres::Postgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_holds_each_gateway_and_another_takes_them_when_it_dies() {
    let pg = Postgres::start().unwrap();
    let pool = || pg::pool(&pg.url(), None, 2).unwrap();
    pg::migrate(&pool()).await.unwrap();
    let ttl = Duration::from_millis(1500);
    let (a, b) = (Leases::new(pool(), "a", ttl), Leases::new(pool(), "b", ttl));
    let gateways: Vec<String> = (0..6).map(|i| format!("gw-{i}")).collect();

    // a asks first and takes them all; then both ask at once, again and again: each gateway
    // keeps exactly one holder.
    assert_eq!(a.refresh(&gateways).await.unwrap(), 6);
    for _ in 0..3 {
        let (ha, hb) = tokio::join!(a.refresh(&gateways), b.refresh(&gateways));
        assert_eq!(ha.unwrap() + hb.unwrap(), 6);
    }
    for g in &gateways {
        assert!(
            a.owns(g).is_some() != b.owns(g).is_some(),
            "{g}: exactly one holder"
        );
    }
    let (mine_a, gen_before): (Vec<String>, Vec<i64>) = gateways
        .iter()
        .filter_map(|g| a.owns(g).map(|h| (g.clone(), h.generation)))
        .unzip();

    assert_eq!(mine_a.len(), 6, "a keeps what it holds while it renews");

    // a dies (stops renewing): b takes every gateway once a's leases are past their time.
    let died = Instant::now();
    let mut taken = None;
    while died.elapsed() < Duration::from_secs(10) {
        if b.refresh(&gateways).await.unwrap() == 6 {
            taken = Some(died.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let taken = taken.expect("b holds every gateway");
    assert!(taken >= ttl - Duration::from_millis(200), "{taken:?}");
    assert!(taken < ttl + Duration::from_secs(1), "{taken:?}");
    // a no longer counts them as its own (its own clock ran out first).
    assert!(gateways.iter().all(|g| a.owns(g).is_none()));
    for (g, before) in mine_a.iter().zip(gen_before) {
        assert_eq!(
            b.owns(g).unwrap().generation,
            before + 1,
            "{g}: a new generation"
        );
    }
    // a comes back: b holds them, a gets none.
    assert_eq!(a.refresh(&gateways).await.unwrap(), 0);

    // b stops cleanly: a takes them at once.
    b.release_all().await.unwrap();
    assert!(b.owns("gw-0").is_none());
    assert_eq!(a.refresh(&gateways).await.unwrap(), 6);
    assert_eq!(
        pg.psql("SELECT count(*) FROM leases WHERE owner = 'a'")
            .unwrap(),
        "6"
    );
}

//! Per-gateway leases in a real PostgreSQL: one replica holds each gateway, and two live
//! replicas hold half each; when one stops renewing (it died), the other takes its gateways
//! within the lease time, with a new generation; a replica that stops cleanly hands them over
//! at once.

use std::time::{Duration, Instant};

use central::pg::{self, leases::Leases};
use gridedge_tests::postgres::Postgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_holds_each_gateway_and_another_takes_them_when_it_dies() {
    let pg = Postgres::start().unwrap();
    let pool = || pg::pool(&pg::connect(&pg.url(), None).unwrap(), 2).unwrap();
    pg::migrate(&pool()).await.unwrap();
    let ttl = Duration::from_millis(1500);
    let (a, b) = (Leases::new(pool(), "a", ttl), Leases::new(pool(), "b", ttl));
    let gateways: Vec<String> = (0..6).map(|i| format!("gw-{i}")).collect();

    // a asks alone and takes them all.
    assert_eq!(a.refresh(&gateways).await.unwrap(), 6);
    let exactly_one = |a: &Leases, b: &Leases| {
        for g in &gateways {
            assert!(
                !(a.owns(g).is_some() && b.owns(g).is_some()),
                "{g}: never two holders"
            );
        }
    };
    // b comes: a gives back what is above its half and b takes it, never two holders at once.
    for _ in 0..4 {
        let (ha, hb) = tokio::join!(a.refresh(&gateways), b.refresh(&gateways));
        assert!(ha.unwrap() + hb.unwrap() <= 6);
        exactly_one(&a, &b);
    }
    let (ha, hb) = (
        a.refresh(&gateways).await.unwrap(),
        b.refresh(&gateways).await.unwrap(),
    );
    assert_eq!((ha, hb), (3, 3), "half each");
    exactly_one(&a, &b);
    let (mine_a, gen_before): (Vec<String>, Vec<i64>) = gateways
        .iter()
        .filter_map(|g| a.owns(g).map(|h| (g.clone(), h.generation)))
        .unzip();
    assert_eq!(mine_a.len(), 3, "a keeps its half while it renews");
    assert_eq!(a.refresh(&gateways).await.unwrap(), 3);

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
    // a comes back: b holds them all, a gets none until b gives half back.
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

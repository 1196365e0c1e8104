//! Central's events in a real PostgreSQL (Debian's, run by the fixture as `nobody`): two
//! replicas migrating and storing the same gateway's batches at once store each event once,
//! and nothing is acknowledged that a kill -9 of the database can take back.

use central::pg::{self, events::PgEvents};
use central::store::StoredEvent;
use firmware_config::ids::GatewayId;
use firmware_config::runtime::clock::Clock;
use firmware_config::wire::{Event, EventClass};
use gridedge_tests::postgres::Postgres;

fn ev(seq: u64) -> Event {
    Event {
        seq,
        class: if seq % 5 == 0 {
            EventClass::Alert
        } else {
            EventClass::Telemetry
        },
        kind: "sensor.reading".into(),
        time: time::OffsetDateTime::now_utc(),
        payload: serde_json::value::RawValue::from_string(format!(
            "{{\"n\":{seq},\"s\":\"网格\"}}"
        ))
        .unwrap(),
        source: None,
    }
}

async fn replica(pg: &Postgres) -> PgEvents {
    let pool = pg::pool(&pg::connect(&pg.url(), None).unwrap(), 4).unwrap();
    PgEvents::new(pool, Clock::system())
}

fn seqs(events: &[StoredEvent]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_store_the_same_batches_at_once_and_each_event_is_stored_once() {
    let pg = Postgres::start().unwrap();
    // Both replicas start together: the schema is made once.
    let (a_pool, b_pool) = (
        pg::pool(&pg::connect(&pg.url(), None).unwrap(), 4).unwrap(),
        pg::pool(&pg::connect(&pg.url(), None).unwrap(), 4).unwrap(),
    );
    let (ma, mb) = tokio::join!(pg::migrate(&a_pool), pg::migrate(&b_pool));
    assert_eq!(ma.unwrap() + mb.unwrap(), pg::MIGRATIONS.len());
    assert_eq!(
        pg.psql("SELECT count(*) FROM schema_migrations").unwrap(),
        pg::MIGRATIONS.len().to_string()
    );
    assert_eq!(pg::migrate(&a_pool).await.unwrap(), 0, "already there");
    let (a, b) = (
        PgEvents::new(a_pool, Clock::system()),
        PgEvents::new(b_pool, Clock::system()),
    );

    let gateways: Vec<GatewayId> = (0..4)
        .map(|i| GatewayId::new(format!("gw-{i}")).unwrap())
        .collect();
    // Every batch goes to both replicas at once (a gateway sending again after a failover),
    // overlapping the one before, in groups of several gateways.
    let mut new = 0u64;
    for round in 0..40u64 {
        let batch: Vec<Event> = (round * 10 + 1..=round * 10 + 15).map(ev).collect();
        let group: Vec<_> = gateways
            .iter()
            .map(|g| (g, batch.as_slice(), None))
            .collect();
        let (ra, rb) = tokio::join!(a.store_batches(&group), b.store_batches(&group));
        for r in ra.into_iter().chain(rb) {
            let stored = r.unwrap();
            assert_eq!(stored.new + stored.duplicates, 15);
            assert_eq!(stored.ranges, vec![(round * 10 + 1, round * 10 + 15)]);
            new += stored.new;
        }
    }
    // 40 rounds reach seq 405 for each of 4 gateways: each counted new exactly once.
    assert_eq!(new, 4 * 405);
    assert_eq!(
        pg.psql("SELECT count(*), count(DISTINCT (gateway, seq)) FROM events")
            .unwrap(),
        "1620|1620"
    );
    let read = b.events_after(&gateways[2], 0, 1000).await.unwrap();
    assert_eq!(seqs(&read), (1..=405).collect::<Vec<_>>());
    assert_eq!(read[4].class, EventClass::Alert);
    assert_eq!(read[0].payload.get(), "{\"n\":1,\"s\":\"网格\"}");
    assert!(read.iter().all(|e| e.received.is_some()));
    assert_eq!(
        seqs(&a.events_after(&gateways[0], 400, 3).await.unwrap()),
        vec![401, 402, 403]
    );
    assert_eq!(a.high(&gateways[3]).await.unwrap(), 405);

    // A replica started later knows what is held: the same batch again is all duplicates.
    let c = replica(&pg).await;
    let again = c
        .store_batches(&[(&gateways[1], &(1..=5).map(ev).collect::<Vec<_>>(), None)])
        .await;
    let again = again.into_iter().next().unwrap().unwrap();
    assert_eq!((again.new, again.duplicates, again.high), (0, 5, 405));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_acknowledged_only_once_committed_and_the_store_comes_back_after_the_database_restarts(
) {
    let mut pg = Postgres::start().unwrap();
    let pool = pg::pool(&pg::connect(&pg.url(), None).unwrap(), 2).unwrap();
    pg::migrate(&pool).await.unwrap();
    let store = PgEvents::new(pool, Clock::system());
    let gw = GatewayId::new("gw-restart").unwrap();
    let first: Vec<Event> = (1..=20).map(ev).collect();
    assert_eq!(
        store.store_batches(&[(&gw, &first, None)]).await[0]
            .as_ref()
            .unwrap()
            .new,
        20
    );

    pg.kill();
    let second: Vec<Event> = (21..=40).map(ev).collect();
    let down = store.store_batches(&[(&gw, &second, None)]).await;
    assert!(
        down[0].is_err(),
        "nothing to acknowledge while the database is down"
    );

    pg.start_again().unwrap();
    // The pool drops its dead connections and makes new ones.
    let mut stored = None;
    for _ in 0..50 {
        match store.store_batches(&[(&gw, &second, None)]).await.remove(0) {
            Ok(s) => {
                stored = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    let stored = stored.expect("stored once the database is back");
    assert_eq!((stored.new, stored.high), (20, 40));
    // What was acknowledged before the kill is there; nothing twice.
    assert_eq!(
        seqs(&store.events_after(&gw, 0, 100).await.unwrap()),
        (1..=40).collect::<Vec<_>>()
    );
}

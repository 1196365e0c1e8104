//! Central's state tables in a real PostgreSQL: the same contract sled's tables keep (ordered
//! keys, prefixes, tables apart), called from async tasks and plain threads alike, and what one
//! central wrote is what another reads.

use central::pg;
use central::state::StateStore;
use gridedge_tests::postgres::Postgres;

fn keys(t: &dyn central::state::Table, prefix: &[u8]) -> Vec<Vec<u8>> {
    t.scan(prefix).map(|e| e.unwrap().0).collect()
}

#[tokio::test]
async fn tables_keep_keys_in_order_and_apart_and_a_second_central_reads_what_the_first_wrote() {
    let pg = Postgres::start().unwrap();
    let pool = pg::pool(&pg::connect(&pg.url(), None).unwrap(), 2).unwrap();
    pg::migrate(&pool).await.unwrap();
    // Called from inside this (single-threaded) runtime, as central's tasks call it.
    let store =
        pg::state::PgState::new(pg::pool(&pg::connect(&pg.url(), None).unwrap(), 2).unwrap())
            .unwrap();
    let t = store.table("cases").unwrap();
    assert!(t.is_empty());
    t.insert(b"b/2", b"two".to_vec()).unwrap();
    t.insert(b"a/1", b"one".to_vec()).unwrap();
    t.insert(b"b/1", b"one-b".to_vec()).unwrap();
    t.insert(&[b'b', 0xFF], b"high".to_vec()).unwrap();
    t.insert(b"c", b"c".to_vec()).unwrap();
    t.flush().unwrap();
    assert_eq!(t.get(b"a/1").unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(t.get(b"zz").unwrap(), None);
    assert_eq!(
        keys(t.as_ref(), b"b/"),
        vec![b"b/1".to_vec(), b"b/2".to_vec()]
    );
    // Bytewise order, as sled's: 0xFF after '/', and a prefix bound past it.
    assert_eq!(
        keys(t.as_ref(), b"b"),
        vec![b"b/1".to_vec(), b"b/2".to_vec(), vec![b'b', 0xFF]]
    );
    let back: Vec<Vec<u8>> = t.scan_rev(b"").map(|e| e.unwrap().0).collect();
    assert_eq!(back[0], b"c".to_vec());
    assert_eq!(keys(t.as_ref(), b"").len(), 5);
    assert_eq!(t.last().unwrap().unwrap().0, b"c".to_vec());
    // An insert on an existing key replaces it.
    t.insert(b"a/1", b"uno".to_vec()).unwrap();
    assert_eq!(t.get(b"a/1").unwrap().as_deref(), Some(&b"uno"[..]));
    t.remove(b"b/2").unwrap();
    assert_eq!(t.len(), 4);
    assert!(store.table("meetings").unwrap().is_empty());

    // Another central (another pool, another runtime), from a plain thread.
    let url = pg.url();
    let other = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let pool = rt.block_on(async { pg::pool(&pg::connect(&url, None).unwrap(), 1).unwrap() });
        let store = pg::state::PgState::new(pool).unwrap();
        let t = store.table("cases").unwrap();
        let got = (t.get(b"a/1").unwrap(), t.len());
        drop(store);
        got
    })
    .join()
    .unwrap();
    assert_eq!(other, (Some(b"uno".to_vec()), 4));

    // The database gone: a clear error, not a hang or a panic.
    drop(pg);
    let err = t.get(b"a/1").unwrap_err();
    assert!(err.to_string().contains("postgres"), "{err}");
}

/// Replicas starting at once each offer a value for the same key (the key of share tokens):
/// the first write wins and every one of them reads that one back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_of_replicas_racing_to_set_a_key_wins_for_all() {
    let pg = Postgres::start().unwrap();
    let pool = pg::pool(&pg::connect(&pg.url(), None).unwrap(), 2).unwrap();
    pg::migrate(&pool).await.unwrap();
    let stores: Vec<_> = (0..4)
        .map(|_| {
            pg::state::PgState::new(pg::pool(&pg::connect(&pg.url(), None).unwrap(), 2).unwrap())
                .unwrap()
        })
        .collect();
    for round in 0..10u8 {
        let key = [b'k', round];
        let got: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> = stores
                .iter()
                .enumerate()
                .map(|(i, store)| {
                    s.spawn(move || {
                        let t = store.table("shares").unwrap();
                        t.insert_if_absent(&key, vec![i as u8; 8]).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            got.windows(2).all(|w| w[0] == w[1]),
            "round {round}: {got:?}"
        );
        let t = stores[0].table("shares").unwrap();
        assert_eq!(t.get(&key).unwrap().as_ref(), Some(&got[0]));
    }
}

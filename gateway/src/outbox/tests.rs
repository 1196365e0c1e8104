use std::path::Path;

use firmware_config::wire::EventClass;
use serde_json::value::RawValue;

use super::*;

fn ev(class: EventClass, n: usize) -> NewEvent {
    NewEvent {
        class,
        kind: format!("test.{}", class.as_str()),
        payload: RawValue::from_string(format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(100)))
            .unwrap(),
        time_ms: None,
        source: None,
    }
}

async fn open(dir: &Path, budget: u64) -> (Outbox, OpenReport) {
    Outbox::open(dir, budget, 1 << 20, 0).unwrap()
}

#[tokio::test]
async fn sequence_numbers_increase_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (ob, _) = open(dir.path(), 1 << 30).await;
    let a = ob
        .append(vec![ev(EventClass::Alert, 1), ev(EventClass::Telemetry, 2)])
        .await
        .unwrap();
    assert_eq!(a, vec![1, 2]);
    ob.acknowledge(vec![(1, 2)]);
    ob.close().await.unwrap();
    let (ob, report) = open(dir.path(), 1 << 30).await;
    assert_eq!(report.pending, 0);
    // Numbers are never reused, even after everything was acknowledged. (A restart may skip
    // ahead to the reserved floor.)
    let next = ob.append(vec![ev(EventClass::Health, 3)]).await.unwrap()[0];
    assert!(next > 2, "{next}");
    ob.close().await.unwrap();
}

#[tokio::test]
async fn pending_is_per_class_in_order_and_ack_deletes_exactly_the_named_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let (ob, _) = open(dir.path(), 1 << 30).await;
    let classes = [
        EventClass::Telemetry,
        EventClass::Alert,
        EventClass::Telemetry,
        EventClass::Alert,
        EventClass::Submission,
    ];
    let seqs = ob
        .append(classes.iter().enumerate().map(|(i, c)| ev(*c, i)).collect())
        .await
        .unwrap();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    let alerts: Vec<u64> = ob
        .pending(EventClass::Alert, 0, 10)
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(alerts, vec![2, 4]);
    let after: Vec<u64> = ob
        .pending(EventClass::Telemetry, 1, 10)
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(after, vec![3]);
    ob.acknowledge(vec![(2, 3), (100, 200)]);
    ob.flush().await.unwrap();
    assert_eq!(
        ob.pending(EventClass::Alert, 0, 10)
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        vec![4]
    );
    assert_eq!(
        ob.pending(EventClass::Telemetry, 0, 10)
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(ob.summary().pending, 3);
    assert_eq!(ob.stats().acked.load(Ordering::Relaxed), 2);
    // Acks that split a chunk keep the rest of it, across a reopen too.
    let e = &ob.pending(EventClass::Submission, 0, 1)[0];
    assert_eq!(e.kind, "test.submission");
    assert!(e.payload.get().starts_with("{\"n\":4,"));
    ob.close().await.unwrap();
}

#[tokio::test]
async fn a_full_budget_evicts_telemetry_first_then_health_and_never_alerts() {
    let dir = tempfile::tempdir().unwrap();
    // Each test event costs about 180 bytes: room for about 50.
    let (ob, _) = open(dir.path(), 9_000).await;
    ob.append((0..20).map(|i| ev(EventClass::Telemetry, i)).collect())
        .await
        .unwrap();
    ob.append((0..10).map(|i| ev(EventClass::Health, i)).collect())
        .await
        .unwrap();
    ob.append((0..15).map(|i| ev(EventClass::Alert, i)).collect())
        .await
        .unwrap();
    assert_eq!(ob.summary().evicted["telemetry"], 0);
    // 15 more alerts: telemetry goes first, oldest first.
    ob.append((0..15).map(|i| ev(EventClass::Alert, i)).collect())
        .await
        .unwrap();
    let s = ob.summary();
    assert!(s.evicted["telemetry"] > 0, "{s:?}");
    assert_eq!(s.evicted["health"], 0, "{s:?}");
    let oldest_left = ob
        .pending(EventClass::Telemetry, 0, 1)
        .first()
        .map(|e| e.seq);
    assert!(oldest_left.is_none_or(|seq| seq > 1));
    // Keep adding alerts until telemetry and health are gone, then the append is refused.
    let mut refused = None;
    for _ in 0..10 {
        if let Err(e) = ob
            .append((0..10).map(|i| ev(EventClass::Alert, i)).collect())
            .await
        {
            refused = Some(e);
            break;
        }
    }
    let err = refused.expect("an append must be refused once only alerts are left");
    assert!(matches!(err, OutboxError::Full { .. }), "{err}");
    assert!(err
        .to_string()
        .contains("only alerts and submissions are left"));
    let s = ob.summary();
    assert_eq!(s.evicted["alert"], 0);
    assert_eq!(ob.pending(EventClass::Telemetry, 0, 100).len(), 0);
    assert_eq!(ob.pending(EventClass::Health, 0, 100).len(), 0);
    assert!(s.refused >= 10);
    let alerts_before = ob.pending(EventClass::Alert, 0, 1000).len();
    // A refused request stores nothing.
    assert!(ob
        .append((0..10).map(|i| ev(EventClass::Alert, i)).collect())
        .await
        .is_err());
    assert_eq!(ob.pending(EventClass::Alert, 0, 1000).len(), alerts_before);
    // Eviction counters survive a restart.
    ob.close().await.unwrap();
    let (ob, _) = open(dir.path(), 9_000).await;
    assert_eq!(ob.summary().evicted, s.evicted);
    ob.close().await.unwrap();
}

fn from(source: &str, class: EventClass, n: usize) -> NewEvent {
    NewEvent {
        source: Some(source.to_owned()),
        ..ev(class, n)
    }
}

#[tokio::test]
async fn a_source_holds_no_more_than_its_quota_and_all_sources_no_more_than_half() {
    let dir = tempfile::tempdir().unwrap();
    // Each test event costs about 200 bytes; the budget holds about 200.
    let budget = 40_000;
    let (ob, _) = open(dir.path(), budget).await;
    // A door controller may hold 20 alerts' worth (4,000 bytes).
    let seqs = ob
        .append_from_source(
            (0..19)
                .map(|i| from("door", EventClass::Alert, i))
                .collect(),
            4_000,
        )
        .await
        .unwrap();
    let err = ob
        .append_from_source(
            (0..5).map(|i| from("door", EventClass::Alert, i)).collect(),
            4_000,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, OutboxError::SourceQuota { ref origin, .. } if origin == "door"),
        "{err}"
    );
    // Its telemetry is evicted like any other, and never counts against the quota.
    ob.append_from_source(
        (0..5)
            .map(|i| from("door", EventClass::Telemetry, i))
            .collect(),
        4_000,
    )
    .await
    .unwrap();
    // The gateway's own alerts and another source are not held back by it.
    ob.append((0..30).map(|i| ev(EventClass::Alert, i)).collect())
        .await
        .unwrap();
    ob.append_from_source(
        (0..10)
            .map(|i| from("smoke", EventClass::Alert, i))
            .collect(),
        4_000,
    )
    .await
    .unwrap();
    // Central's ack frees the source's room.
    ob.acknowledge(vec![(seqs[0], seqs[9])]);
    ob.flush().await.unwrap();
    ob.append_from_source(
        (0..5).map(|i| from("door", EventClass::Alert, i)).collect(),
        4_000,
    )
    .await
    .unwrap();
    // What a source holds is counted again after a restart.
    let held = ob.source_pending("door");
    assert!(held > 2_500, "{held}");
    ob.close().await.unwrap();
    let (ob, _) = open(dir.path(), budget).await;
    assert_eq!(ob.source_pending("door"), held);
    // However large their quotas, all sources together hold at most half the budget.
    let mut refused = None;
    for i in 0..40 {
        let who = format!("src-{i}");
        if let Err(e) = ob
            .append_from_source(
                (0..10).map(|n| from(&who, EventClass::Alert, n)).collect(),
                budget,
            )
            .await
        {
            refused = Some(e);
            break;
        }
    }
    assert!(
        matches!(refused, Some(OutboxError::SourceQuota { .. })),
        "{refused:?}"
    );
    let sources: u64 = ob.stats().source_pending.lock().unwrap().values().sum();
    assert!(sources <= budget / 2, "{sources}");
    // ...and the gateway's own alerts still fit.
    ob.append((0..20).map(|i| ev(EventClass::Alert, i)).collect())
        .await
        .unwrap();
    ob.close().await.unwrap();
}

#[tokio::test]
async fn a_record_failing_its_checksum_quarantines_the_store_and_salvages_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (ob, _) = open(dir.path(), 1 << 30).await;
    ob.append((0..5).map(|i| ev(EventClass::Submission, i)).collect())
        .await
        .unwrap();
    ob.close().await.unwrap();
    {
        // Flip a byte inside record 3, within its chunk.
        let db = sled::open(dir.path().join("outbox")).unwrap();
        let t = db.open_tree("class/submission").unwrap();
        let (k, v) = t.iter().next().unwrap().unwrap();
        let records = chunk::decode(&v).unwrap();
        let mut owned: Vec<(u64, Vec<u8>)> =
            records.iter().map(|(s, r)| (*s, r.to_vec())).collect();
        let rec = &mut owned.iter_mut().find(|(s, _)| *s == 3).unwrap().1;
        let last = rec.len() - 2;
        rec[last] ^= 0x55;
        t.insert(
            k,
            chunk::encode(owned.iter().map(|(s, r)| (*s, r.as_slice()))),
        )
        .unwrap();
        db.flush().unwrap();
    }
    let (ob, report) = open(dir.path(), 1 << 30).await;
    let q = report.quarantined.expect("quarantined");
    assert!(q.reason.contains("submission record 3"), "{}", q.reason);
    assert_eq!(q.salvaged, 4);
    assert!(q.moved_to.exists());
    let seqs: Vec<u64> = ob
        .pending(EventClass::Submission, 0, 10)
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2, 4, 5]);
    assert!(ob.append(vec![ev(EventClass::Alert, 0)]).await.unwrap()[0] > 5);
    ob.close().await.unwrap();
}

#[tokio::test]
async fn a_store_that_cannot_be_opened_is_moved_aside_and_a_fresh_one_started() {
    let dir = tempfile::tempdir().unwrap();
    let (ob, _) = open(dir.path(), 1 << 30).await;
    ob.append(vec![ev(EventClass::Alert, 0)]).await.unwrap();
    ob.close().await.unwrap();
    let conf = dir.path().join("outbox/conf");
    std::fs::write(&conf, b"\xff\xfe garbage, not sled's config").unwrap();
    let (ob, report) = open(dir.path(), 1 << 30).await;
    let q = report.quarantined.expect("quarantined");
    assert!(q.moved_to.join("conf").exists());
    // Nothing could be salvaged, yet numbering goes on above every number handed out before.
    let seq = ob.append(vec![ev(EventClass::Alert, 1)]).await.unwrap()[0];
    assert!(
        seq > 1,
        "sequence number {seq} reused after the store was lost"
    );
    ob.close().await.unwrap();
}

#[tokio::test]
async fn many_concurrent_appends_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let (ob, _) = open(dir.path(), 1 << 30).await;
    let mut tasks = Vec::new();
    for t in 0..64 {
        let ob = ob.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..20 {
                seqs.extend(
                    ob.append(vec![ev(EventClass::Telemetry, t * 100 + i)])
                        .await
                        .unwrap(),
                );
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=1280).collect::<Vec<u64>>());
    let flushes = ob.stats().flushes.load(Ordering::Relaxed);
    assert!(
        flushes < 1280,
        "every append flushed alone ({flushes} flushes)"
    );
    ob.close().await.unwrap();
}

#[tokio::test]
async fn a_store_in_use_is_refused_not_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let (ob, _) = open(dir.path(), 1 << 30).await;
    let second = Outbox::open(dir.path(), 1 << 30, 1 << 20, 0);
    assert!(
        matches!(second, Err(OutboxError::Locked(_))),
        "{:?}",
        second.err()
    );
    assert!(!std::fs::read_dir(dir.path()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("quarantined")));
    ob.close().await.unwrap();
}

//! The MQTT transport under the gateway's uplink and central's link, on a real broker: its
//! `poll` may be dropped at any moment (a `select!` with a timer, `now_or_never`) without
//! losing a message or an acknowledgement, and after a failure it connects again only when
//! its caller polls again (the caller's backoff holds).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use firmware_config::runtime::mqtt::client_options;
use firmware_config::runtime::transport::{Incoming, MqttTransport, Transport};
use futures::FutureExt;
use gridedge_tests::Mosquitto;
use rumqttc::{AsyncClient, QoS};

/// A session that acknowledges by hand and keeps its subscriptions.
fn consumer(url: &str) -> MqttTransport {
    let mut opts = client_options(url, None, "consumer", Duration::from_secs(10)).unwrap();
    opts.set_clean_session(false);
    opts.set_manual_acks(true);
    MqttTransport::new(opts, 64)
}

/// Polls until the broker accepts the session.
async fn connected(t: &mut MqttTransport) {
    let wait = async {
        loop {
            if let Ok(Incoming::Connected { .. }) = t.poll().await {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("the broker accepts the session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_dropped_at_any_moment_loses_no_message_and_no_acknowledgement() {
    const N: u32 = 3_000;
    let m = Mosquitto::start().unwrap();
    let mut t = consumer(&m.url());
    connected(&mut t).await;
    t.subscribe("load/#".into()).unwrap();
    // Let the SUBACK come back before anything is published.
    let _ = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            let _ = t.poll().await;
        }
    })
    .await;

    let opts = client_options(&m.url(), None, "producer", Duration::from_secs(10)).unwrap();
    let (producer, mut producer_loop) = AsyncClient::new(opts, 64);
    let taken = Arc::new(AtomicUsize::new(0));
    let progress = taken.clone();
    let publishing = tokio::spawn(async move {
        let sending = async {
            for i in 0..N {
                // Mosquitto drops what a session has queued beyond its limits (1,000
                // messages by default; it was seen dropping under load with 500 ahead): the
                // producer stays well within them.
                while i as usize >= progress.load(Ordering::SeqCst) + 100 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                producer
                    .publish("load/x", QoS::AtLeastOnce, false, i.to_be_bytes().to_vec())
                    .await
                    .unwrap();
            }
        };
        // Driven until the broker has acknowledged every publish.
        let driving = async {
            let mut acked = 0;
            while acked < N {
                match producer_loop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => acked += 1,
                    Ok(_) => {}
                    Err(e) => panic!("the producer lost the broker: {e}"),
                }
            }
        };
        tokio::join!(sending, driving);
    });

    let mut received = Vec::new();
    let mut unacked = std::collections::VecDeque::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut cancelled = 0u32;
    while received.len() < N as usize {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {N} messages in a minute; the broker's log:\n{}",
            received.len(),
            m.log_text()
        );
        // Every other poll is cut short by a timer or tried once and dropped.
        let event = if received.len() % 2 == 0 {
            tokio::time::timeout(Duration::from_micros(20), t.poll())
                .await
                .ok()
        } else {
            let once = t.poll().now_or_never();
            // A loop that never waits would keep the transport's task off this thread.
            tokio::task::yield_now().await;
            once
        };
        match event {
            None => cancelled += 1,
            Some(Ok(Incoming::Message {
                payload, receipt, ..
            })) => {
                received.push(u32::from_be_bytes(payload[..4].try_into().unwrap()));
                taken.store(received.len(), Ordering::SeqCst);
                unacked.push_back(receipt);
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("the session failed: {e}"),
        }
        while let Some(r) = unacked.front() {
            if t.ack(*r).is_err() {
                break;
            }
            unacked.pop_front();
        }
    }
    publishing.await.unwrap();
    assert!(
        cancelled > 0,
        "no poll was ever dropped: the test proves nothing"
    );
    assert_eq!(
        received,
        (0..N).collect::<Vec<_>>(),
        "every message once, in order"
    );
    // The last acknowledgements leave before the goodbye.
    while let Some(r) = unacked.pop_front() {
        while t.ack(r).is_err() {
            let _ = tokio::time::timeout(Duration::from_millis(10), t.poll()).await;
        }
    }
    t.disconnect().await;
    drop(t);

    // Had any PUBACK been lost, the broker would send its message again to the same session.
    let mut again = consumer(&m.url());
    connected(&mut again).await;
    let redelivered = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Ok(Incoming::Message { payload, .. }) = again.poll().await {
                return payload;
            }
        }
    })
    .await;
    assert!(
        redelivered.is_err(),
        "the broker sent a message again: an acknowledgement was lost ({redelivered:?}); {} polls dropped",
        cancelled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_returns_once_the_broker_has_read_what_was_queued_before_it() {
    // Within Mosquitto's 20 messages in flight to a client: all of them come before any ack.
    const N: u32 = 20;
    let m = Mosquitto::start().unwrap();
    let mut t = consumer(&m.url());
    connected(&mut t).await;
    t.subscribe("load/#".into()).unwrap();
    let _ = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            let _ = t.poll().await;
        }
    })
    .await;

    let opts = client_options(&m.url(), None, "producer", Duration::from_secs(10)).unwrap();
    let (producer, mut producer_loop) = AsyncClient::new(opts, 64);
    for i in 0..N {
        producer
            .try_publish("load/x", QoS::AtLeastOnce, false, i.to_be_bytes().to_vec())
            .unwrap();
    }
    let producing = tokio::spawn(async move {
        let mut acked = 0;
        while acked < N {
            match producer_loop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("the producer lost the broker: {e}"),
            }
        }
    });
    let mut receipts = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while receipts.len() < N as usize {
            if let Incoming::Message { receipt, .. } = t.poll().await.unwrap() {
                receipts.push(receipt);
            }
        }
    })
    .await
    .expect("every message comes");
    producing.await.unwrap();

    // A busy broker: the acks, the DISCONNECT and the next session's CONNECT would all wait
    // in its sockets, and it would read the CONNECT, take the session over and close the old
    // connection before reading the acks left on it.
    m.pause().unwrap();
    for r in receipts {
        t.ack(r).unwrap();
    }
    let resume = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        m.resume().unwrap();
    };
    let goodbye_then_again = async {
        t.disconnect().await;
        drop(t);
        let mut again = consumer(&m.url());
        connected(&mut again).await;
        again
    };
    let ((), mut again) = tokio::join!(resume, goodbye_then_again);
    let redelivered = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Ok(Incoming::Message { payload, .. }) = again.poll().await {
                return payload;
            }
        }
    })
    .await;
    assert!(
        redelivered.is_err(),
        "the broker sent a message again: an acknowledgement queued before the goodbye was \
         not read ({redelivered:?})"
    );
}

#[tokio::test]
async fn after_a_failure_it_connects_again_only_when_polled() {
    // A server that takes each connection and closes it at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let server = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    let mut t = consumer(&format!("mqtt://127.0.0.1:{port}"));
    for attempt in 1..=3 {
        let failed = tokio::time::timeout(Duration::from_secs(5), t.poll())
            .await
            .expect("a closed connection fails the poll");
        assert!(failed.is_err(), "attempt {attempt}: {failed:?}");
        // The caller backs off: nothing connects meanwhile.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            attempt,
            "connected again without being polled"
        );
    }
    server.abort();
}

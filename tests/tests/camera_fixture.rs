//! The test camera is a real RTSP server: `retina` (the gateway's RTSP client) describes it and
//! reads frames of the configured codec and size, with and without digest auth, live and
//! replayed, and across a camera restart.

use std::time::Duration;

use futures::StreamExt;
use gridedge_tests::{CameraOptions, Codec, Pattern, TestCamera};
use retina::client::{
    Credentials, PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions, Transport,
};
use retina::codec::{CodecItem, ParametersRef};

#[derive(Debug)]
struct Reading {
    encoding: String,
    dims: (u32, u32),
    frames: usize,
    keyframes: usize,
    /// RTP timestamps (90 kHz), in arrival order.
    timestamps: Vec<i64>,
    wall: Duration,
}

/// Describes, sets up and plays the camera's video stream and reads `n` frames.
async fn read_frames(
    cam: &TestCamera,
    creds: Option<(&str, &str)>,
    n: usize,
) -> anyhow::Result<Reading> {
    let creds = creds.map(|(u, p)| Credentials {
        username: u.to_owned(),
        password: p.to_owned(),
    });
    let opts = SessionOptions::default()
        .creds(creds)
        .user_agent("gridedge-test".to_owned());
    let mut session =
        tokio::time::timeout(Duration::from_secs(10), Session::describe(cam.url(), opts)).await??;
    let i = session
        .streams()
        .iter()
        .position(|s| s.media() == "video")
        .ok_or_else(|| anyhow::anyhow!("no video stream"))?;
    let encoding = session.streams()[i].encoding_name().to_owned();
    session
        .setup(
            i,
            SetupOptions::default().transport(Transport::Tcp(TcpTransportOptions::default())),
        )
        .await?;
    let mut demuxed = session.play(PlayOptions::default()).await?.demuxed()?;
    let t0 = std::time::Instant::now();
    let (mut frames, mut keyframes, mut timestamps) = (0, 0, Vec::new());
    while frames < n {
        // retina's stream has no read timeout of its own.
        let item = tokio::time::timeout(Duration::from_secs(5), demuxed.next())
            .await
            .map_err(|_| anyhow::anyhow!("no frame for 5 s after {frames} frames"))?
            .ok_or_else(|| anyhow::anyhow!("stream ended after {frames} frames"))??;
        if let CodecItem::VideoFrame(f) = item {
            frames += 1;
            keyframes += usize::from(f.is_random_access_point());
            timestamps.push(f.timestamp().timestamp());
        }
    }
    let dims = match demuxed.streams()[i].parameters() {
        Some(ParametersRef::Video(v)) => v.pixel_dimensions(),
        _ => anyhow::bail!("no video parameters after {frames} frames"),
    };
    Ok(Reading {
        encoding,
        dims,
        frames,
        keyframes,
        timestamps,
        wall: t0.elapsed(),
    })
}

#[tokio::test]
async fn retina_reads_h264_frames_of_the_configured_size_at_the_configured_rate() {
    let cam = TestCamera::start(CameraOptions::default()).unwrap();
    let r = read_frames(&cam, None, 60).await.unwrap();
    assert_eq!(r.encoding, "h264");
    assert_eq!(r.dims, (640, 360));
    assert!(r.keyframes >= 1, "{r:?}");
    // 60 frames at 25 fps: about 2.4 s of stream; timestamps step by 90000/25 = 3600.
    let span = r.timestamps.last().unwrap() - r.timestamps.first().unwrap();
    assert_eq!(span, 59 * 3600, "{:?}", r.timestamps);
    assert!(
        r.wall >= Duration::from_millis(1500),
        "frames came faster than real time: {r:?}"
    );
}

#[tokio::test]
async fn retina_reads_h265_frames() {
    let cam = TestCamera::start(CameraOptions {
        codec: Codec::H265,
        width: 320,
        height: 240,
        ..Default::default()
    })
    .unwrap();
    let r = read_frames(&cam, None, 30).await.unwrap();
    assert_eq!(r.encoding, "h265");
    assert_eq!(r.dims, (320, 240));
    assert!(r.keyframes >= 1, "{r:?}");
}

#[tokio::test]
async fn static_and_black_patterns_stream_too() {
    for pattern in [Pattern::Static, Pattern::Black] {
        let cam = TestCamera::start(CameraOptions {
            pattern,
            width: 320,
            height: 180,
            ..Default::default()
        })
        .unwrap();
        let r = read_frames(&cam, None, 10).await.unwrap();
        assert_eq!(r.dims, (320, 180), "{pattern:?}");
    }
}

#[tokio::test]
async fn digest_auth_refuses_wrong_credentials_and_admits_right_ones() {
    let cam = TestCamera::start(CameraOptions {
        auth: Some(("viewer".into(), "s3cret".into())),
        width: 320,
        height: 180,
        ..Default::default()
    })
    .unwrap();
    let none = read_frames(&cam, None, 1).await.unwrap_err().to_string();
    assert!(none.contains("401"), "{none}");
    let wrong = read_frames(&cam, Some(("viewer", "nope")), 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(wrong.contains("401"), "{wrong}");
    let r = read_frames(&cam, Some(("viewer", "s3cret")), 5)
        .await
        .unwrap();
    assert_eq!(r.frames, 5);
}

#[tokio::test]
async fn replay_mode_loops_a_pre_encoded_file_with_increasing_timestamps() {
    for codec in [Codec::H264, Codec::H265] {
        // A 1 s file read for 2.4 s crosses the loop boundary at least once.
        let file = TestCamera::pre_encoded(codec, 320, 240, 25, 1).unwrap();
        let cam = TestCamera::start(CameraOptions {
            codec,
            width: 320,
            height: 240,
            replay: Some(file),
            ..Default::default()
        })
        .unwrap();
        let r = read_frames(&cam, None, 60).await.unwrap();
        assert_eq!(r.dims, (320, 240), "{codec:?}");
        assert!(r.keyframes >= 2, "{codec:?}: {r:?}");
        assert!(
            r.timestamps.windows(2).all(|w| w[1] > w[0]),
            "{codec:?}: timestamps went back: {:?}",
            r.timestamps
        );
    }
}

#[tokio::test]
async fn a_stopped_camera_refuses_and_a_restarted_one_streams_again() {
    let mut cam = TestCamera::start(CameraOptions {
        width: 320,
        height: 180,
        ..Default::default()
    })
    .unwrap();
    read_frames(&cam, None, 5).await.unwrap();
    cam.stop();
    assert!(read_frames(&cam, None, 1).await.is_err());
    cam.restart().unwrap();
    let r = read_frames(&cam, None, 5).await.unwrap();
    assert_eq!(r.frames, 5);
}

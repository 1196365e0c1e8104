//! H.264 for players that cannot decode H.265: a camera's H.265 stream decoded and encoded
//! again with libx264 (FFmpeg through ffmpeg-next) at a configured width, on one thread of its
//! own per camera, while someone watches it.
//!
//! The encoder is set so that its output looks like a camera's H.264 as retina hands it over:
//! Annex B with SPS and PPS before each IDR (no global header), timestamps on the camera's
//! 90 kHz clock, an IDR wherever the camera sent a keyframe (so the live path's GOPs, and the
//! joining of viewers, stay the camera's). `ultrafast` and `zerolatency`: one frame in, one
//! out, no lookahead. One thread for each codec, so a camera costs at most one core.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};

use bytes::Bytes;
use ff::codec::{self, threading};
use ff::format::Pixel;
use ff::software::scaling;
use ff::util::frame;
use ffmpeg_next as ff;

use super::Live;
use crate::camera::source::{OwnedParameterSets, StreamParameters};

#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error("cannot start FFmpeg: {0}")]
    Init(ff::Error),
    #[error("this FFmpeg has no {0}")]
    Missing(&'static str),
    #[error("the H.265 stream did not decode: {0}")]
    Decode(ff::Error),
    #[error("cannot scale the picture: {0}")]
    Scale(ff::Error),
    #[error("cannot encode H.264: {0}")]
    Encode(ff::Error),
}

/// An encoded H.264 access unit: `ts` on the 90 kHz clock, Annex B.
pub struct Encoded {
    pub ts: i64,
    /// The picture's width and height.
    pub size: (u32, u32),
    pub keyframe: bool,
    pub data: Vec<u8>,
}

/// The output size for a source of `w`×`h` at most `width` wide: the aspect kept, both even.
pub fn output_size(w: u32, h: u32, width: u32) -> (u32, u32) {
    let out_w = width.min(w).max(16) & !1;
    let out_h = ((u64::from(h) * u64::from(out_w) / u64::from(w.max(1))) as u32).max(16) & !1;
    (out_w, out_h)
}

pub struct Transcoder {
    dec: ff::decoder::Video,
    enc: Option<ff::encoder::Video>,
    scaler: Option<((Pixel, u32, u32), scaling::Context)>,
    width: u32,
    size: (u32, u32),
    fps: (i32, i32),
    decoded: frame::Video,
    scaled: frame::Video,
    out: ff::Packet,
}

impl Transcoder {
    /// A transcoder to H.264 at most `width` wide, for a camera whose frames last
    /// `frame_rate.0 / frame_rate.1` seconds (the camera parameters' `frame_rate`).
    pub fn new(width: u32, frame_rate: (u32, u32)) -> Result<Self, TranscodeError> {
        ff::init().map_err(TranscodeError::Init)?;
        // Errors come back as values; FFmpeg's own log (x264's summary) stays out of ours.
        ff::util::log::set_level(ff::util::log::Level::Fatal);
        let hevc =
            ff::decoder::find(codec::Id::HEVC).ok_or(TranscodeError::Missing("H.265 decoder"))?;
        let mut d = codec::Context::new_with_codec(hevc);
        d.set_threading(threading::Config {
            kind: threading::Type::None,
            count: 1,
            ..Default::default()
        });
        let dec = d.decoder().video().map_err(TranscodeError::Init)?;
        // Frames a second, as x264 counts them: the inverse.
        let fps = (
            i32::try_from(frame_rate.1.max(1)).unwrap_or(25),
            i32::try_from(frame_rate.0.max(1)).unwrap_or(1),
        );
        Ok(Self {
            dec,
            enc: None,
            scaler: None,
            width,
            size: (0, 0),
            fps,
            decoded: frame::Video::empty(),
            scaled: frame::Video::empty(),
            out: ff::Packet::empty(),
        })
    }

    /// The encoder for pictures of `size`, opened.
    fn encoder(&self, size: (u32, u32)) -> Result<ff::encoder::Video, TranscodeError> {
        let x264 =
            ff::encoder::find_by_name("libx264").ok_or(TranscodeError::Missing("libx264"))?;
        let mut e = codec::Context::new_with_codec(x264)
            .encoder()
            .video()
            .map_err(TranscodeError::Init)?;
        e.set_width(size.0);
        e.set_height(size.1);
        e.set_format(Pixel::YUV420P);
        e.set_time_base(ff::Rational::new(1, 90_000));
        // x264's rate control counts frames by it (the time base alone would say 90,000 fps).
        e.set_frame_rate(Some(ff::Rational::new(self.fps.0, self.fps.1)));
        e.set_max_b_frames(0);
        e.set_threading(threading::Config {
            kind: threading::Type::Slice,
            count: 1,
            ..Default::default()
        });
        let mut o = ff::Dictionary::new();
        o.set("preset", "ultrafast");
        o.set("tune", "zerolatency");
        o.set("forced-idr", "1");
        o.set("crf", "26");
        o.set("x264-params", "keyint=infinite:scenecut=0:repeat-headers=1");
        e.open_with(o).map_err(TranscodeError::Init)
    }

    /// One camera access unit in (Annex B, `ts` on the 90 kHz clock); the H.264 access units
    /// it gives out through `emit` (one per picture).
    pub fn push(
        &mut self,
        ts: i64,
        data: &[u8],
        mut emit: impl FnMut(Encoded),
    ) -> Result<(), TranscodeError> {
        // A copy: FFmpeg wants its packets padded.
        let mut p = ff::Packet::copy(data);
        p.set_pts(Some(ts));
        p.set_dts(Some(ts));
        self.dec.send_packet(&p).map_err(TranscodeError::Decode)?;
        while self.dec.receive_frame(&mut self.decoded).is_ok() {
            let (w, h) = (self.decoded.width(), self.decoded.height());
            let shape = (self.decoded.format(), w, h);
            if self.scaler.as_ref().is_none_or(|(k, _)| *k != shape) {
                // A new picture size: a new scaler and encoder (the stream starts afresh).
                let size = output_size(w, h, self.width);
                let sc = scaling::Context::get(
                    shape.0,
                    w,
                    h,
                    Pixel::YUV420P,
                    size.0,
                    size.1,
                    scaling::Flags::BILINEAR,
                )
                .map_err(TranscodeError::Scale)?;
                self.scaler = Some((shape, sc));
                self.scaled = frame::Video::empty();
                self.enc = Some(self.encoder(size)?);
                self.size = size;
            }
            let Some((_, sc)) = self.scaler.as_mut() else {
                continue;
            };
            sc.run(&self.decoded, &mut self.scaled)
                .map_err(TranscodeError::Scale)?;
            self.scaled.set_pts(self.decoded.timestamp());
            // The camera's keyframes stay keyframes (an IDR, forced).
            self.scaled.set_kind(if self.decoded.is_key() {
                ff::picture::Type::I
            } else {
                ff::picture::Type::None
            });
            let size = self.size;
            let Some(enc) = self.enc.as_mut() else {
                continue;
            };
            enc.send_frame(&self.scaled)
                .map_err(TranscodeError::Encode)?;
            while enc.receive_packet(&mut self.out).is_ok() {
                emit(Encoded {
                    ts: self.out.pts().unwrap_or(ts),
                    size,
                    keyframe: self.out.is_key(),
                    data: self.out.data().unwrap_or_default().to_vec(),
                });
            }
        }
        Ok(())
    }

    /// The output's width and height (zero before the first picture).
    pub fn size(&self) -> (u32, u32) {
        self.size
    }
}

/// The parameters of an H.264 stream from a keyframe's SPS and PPS.
pub fn parameters(
    keyframe: &[u8],
    size: (u32, u32),
    fps: Option<(u32, u32)>,
) -> Option<StreamParameters> {
    let nal = |t: u8| {
        crate::camera::annexb::nals(keyframe)
            .find(|n| n.first().is_some_and(|b| b & 0x1F == t))
            .map(<[u8]>::to_vec)
    };
    let (sps, pps) = (nal(7)?, nal(8)?);
    let codec = format!(
        "avc1.{:02X}{:02X}{:02X}",
        sps.get(1)?,
        sps.get(2)?,
        sps.get(3)?
    );
    Some(StreamParameters {
        sets: OwnedParameterSets::H264 { sps, pps },
        width: size.0,
        height: size.1,
        rfc6381_codec: codec,
        frame_rate: fps,
    })
}

/// A camera's transcode while it runs: frames go to its thread, which feeds `out`.
pub struct Transcode {
    tx: SyncSender<(i64, bool, Bytes)>,
    /// The thread fell behind: frames are dropped until the next keyframe.
    skipping: bool,
    pub out: Live,
}

/// Frames waiting for the transcoder at most: two GOPs of a 25 fps camera.
const QUEUE: usize = 100;

impl Transcode {
    /// Starts transcoding `camera` to H.264 at most `width` wide into `out`.
    pub fn start(
        camera: &str,
        out: Live,
        width: u32,
        fps: Option<(u32, u32)>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE);
        let feed = out.clone();
        let name = camera.to_owned();
        std::thread::Builder::new()
            .name(format!("transcode-{camera}"))
            .spawn(move || run(&name, rx, feed, width, fps))?;
        tracing::info!(camera, width, "transcoding to H.264 started");
        Ok(Self {
            tx,
            skipping: false,
            out,
        })
    }

    /// A camera frame; false when the transcode has ended (its thread stopped).
    pub fn send(&mut self, ts: i64, keyframe: bool, data: Bytes) -> bool {
        if self.skipping && !keyframe {
            return true;
        }
        match self.tx.try_send((ts, keyframe, data)) {
            Ok(()) => {
                self.skipping = false;
                true
            }
            Err(TrySendError::Full(_)) => {
                // Never a hole in a GOP: wait for the next keyframe.
                if !self.skipping {
                    tracing::warn!(
                        "the transcode fell behind: frames skipped to the next keyframe"
                    );
                }
                self.skipping = true;
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

fn run(
    camera: &str,
    rx: Receiver<(i64, bool, Bytes)>,
    out: Live,
    width: u32,
    fps: Option<(u32, u32)>,
) {
    let mut t = match Transcoder::new(width, fps.unwrap_or((1, 25))) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(camera, error = %e, "cannot transcode to H.264");
            out.stop();
            return;
        }
    };
    let mut started = false;
    let mut sets: Option<Vec<u8>> = None;
    // From a keyframe: a decoder needs one to start.
    for (ts, _, data) in rx.iter().skip_while(|(_, k, _)| !k) {
        let pushed = t.push(ts, &data, |e| {
            if e.keyframe {
                if let Some(p) = parameters(&e.data, e.size, fps) {
                    let key = match &p.sets {
                        OwnedParameterSets::H264 { sps, pps } => [sps.as_slice(), pps].concat(),
                        OwnedParameterSets::H265 { .. } => Vec::new(),
                    };
                    if sets.as_ref() != Some(&key) {
                        out.set_parameters(&p, false);
                        sets = Some(key);
                    }
                    started = true;
                }
            }
            if started {
                out.frame(e.ts, e.keyframe, e.data);
            }
        });
        if let Err(e) = pushed {
            tracing::warn!(camera, error = %e, "a frame did not transcode");
        }
    }
    out.stop();
    tracing::info!(camera, "transcoding to H.264 stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_keep_the_aspect_and_stay_even() {
        assert_eq!(output_size(1920, 1080, 1280), (1280, 720));
        assert_eq!(
            output_size(640, 360, 1280),
            (640, 360),
            "never wider than the camera"
        );
        assert_eq!(output_size(2560, 1440, 1001), (1000, 562));
    }

    #[test]
    fn an_h265_keyframe_comes_out_as_an_h264_idr_with_its_parameters() {
        let key = include_bytes!("../camera/testdata/key265.h265");
        let mut t = Transcoder::new(1280, (1, 25)).unwrap();
        let mut out = Vec::new();
        for i in 0..3 {
            t.push(i * 3600, key, |e| out.push(e)).unwrap();
        }
        assert!(!out.is_empty(), "a picture out");
        let first = &out[0];
        assert!(first.keyframe);
        assert_eq!(first.ts, 0, "the camera's clock");
        let types: Vec<u8> = crate::camera::annexb::nals(&first.data)
            .map(|n| n[0] & 0x1F)
            .collect();
        assert!(
            types.contains(&7) && types.contains(&8) && types.contains(&5),
            "{types:?}"
        );
        let p = parameters(&first.data, first.size, Some((1, 25))).unwrap();
        assert!(p.rfc6381_codec.starts_with("avc1."), "{}", p.rfc6381_codec);
        assert_eq!((p.width, p.height), t.size());
        assert!(t.size().0 > 0 && t.size().0 % 2 == 0);
    }
}

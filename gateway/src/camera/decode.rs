//! Keyframe decoding with FFmpeg (ffmpeg-next): a keyframe in, a small greyscale [`Thumb`]
//! for sensing and, when asked, a JPEG out.
//!
//! Each keyframe arrives as Annex B with its parameter sets (retina's `FrameFormat::SIMPLE`),
//! so it decodes on its own: one decoder per codec serves every camera, flushed after each
//! picture. A picture whose size or format differs from the last one rebuilds the scalers
//! and the JPEG encoder; a decoder that fails is dropped and rebuilt on the next keyframe.

use ff::codec::{self, Id};
use ff::format::Pixel;
use ff::software::scaling;
use ff::util::frame;
use ffmpeg_next as ff;

use super::sensing::{Thumb, THUMB_WIDTH};

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot start FFmpeg: {0}")]
    Init(ff::Error),
    #[error("this FFmpeg has no {0} decoder")]
    NoDecoder(&'static str),
    #[error("this FFmpeg has no JPEG encoder")]
    NoJpegEncoder,
    #[error("the keyframe did not decode: {0}")]
    Decode(ff::Error),
    #[error("the keyframe decoded to no picture")]
    NoPicture,
    #[error("cannot scale the picture: {0}")]
    Scale(ff::Error),
    #[error("cannot encode the JPEG: {0}")]
    Jpeg(ff::Error),
}

/// The video codecs the gateway decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    H265,
}

impl VideoCodec {
    pub fn from_encoding(name: &str) -> Option<Self> {
        match name {
            "h264" => Some(Self::H264),
            "h265" => Some(Self::H265),
            _ => None,
        }
    }

    fn id(self) -> Id {
        match self {
            Self::H264 => Id::H264,
            Self::H265 => Id::HEVC,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::H264 => "H.264",
            Self::H265 => "H.265",
        }
    }
}

/// A decoded keyframe; the pixels stay in FFmpeg's frame until dropped.
pub struct Picture {
    frame: frame::Video,
}

impl Picture {
    pub fn width(&self) -> u32 {
        self.frame.width()
    }
    pub fn height(&self) -> u32 {
        self.frame.height()
    }
}

/// Shape of a conversion: source format and size to destination size.
type ScaleKey = (Pixel, u32, u32, u32, u32);

/// Decoders, scalers and the JPEG encoder of one worker thread (FFmpeg contexts stay on the
/// thread that made them).
#[derive(Default)]
pub struct Pictures {
    decoders: Vec<(VideoCodec, ff::decoder::Video)>,
    thumb_scaler: Option<(ScaleKey, scaling::Context)>,
    jpeg_scaler: Option<(ScaleKey, scaling::Context)>,
    jpeg: Option<((u32, u32, u8), ff::encoder::video::Encoder)>,
    /// Pictures given to the JPEG encoder: its frames need increasing timestamps.
    jpeg_pts: i64,
    /// Pictures decoded since the worker started, and rebuilds after a change or a failure.
    pub rebuilds: u64,
}

/// FFmpeg's quality scale: 2 (best) … 31 (worst).
fn qscale(quality: u8) -> i32 {
    let q = i32::from(quality.clamp(1, 100));
    2 + (100 - q) * 29 / 99
}

impl Pictures {
    pub fn init() -> Result<(), DecodeError> {
        ff::init().map_err(DecodeError::Init)?;
        ff::util::log::set_level(ff::util::log::Level::Fatal);
        Ok(())
    }

    fn decoder(&mut self, codec: VideoCodec) -> Result<&mut ff::decoder::Video, DecodeError> {
        if let Some(i) = self.decoders.iter().position(|(c, _)| *c == codec) {
            return Ok(&mut self.decoders[i].1);
        }
        let found = ff::decoder::find(codec.id()).ok_or(DecodeError::NoDecoder(codec.name()))?;
        let mut ctx = codec::Context::new_with_codec(found);
        // One picture at a time: frame threads would only add buffered pictures and memory.
        ctx.set_threading(codec::threading::Config {
            kind: codec::threading::Type::None,
            count: 1,
            ..Default::default()
        });
        // SAFETY: the context is freshly allocated and not yet opened; these fields are
        // plain enums that FFmpeg reads when decoding.
        unsafe {
            let raw = ctx.as_mut_ptr();
            (*raw).skip_frame = ff::ffi::AVDiscard::AVDISCARD_NONKEY;
        }
        let dec = ctx.decoder().video().map_err(DecodeError::Decode)?;
        self.decoders.push((codec, dec));
        self.rebuilds += 1;
        let last = self.decoders.len() - 1;
        Ok(&mut self.decoders[last].1)
    }

    /// Decodes one self-contained keyframe (Annex B with parameter sets).
    pub fn decode(&mut self, codec: VideoCodec, data: &[u8]) -> Result<Picture, DecodeError> {
        let result = self.decode_inner(codec, data);
        if result.is_err() {
            // Start the next keyframe from a clean decoder.
            self.decoders.retain(|(c, _)| *c != codec);
        }
        result
    }

    fn decode_inner(&mut self, codec: VideoCodec, data: &[u8]) -> Result<Picture, DecodeError> {
        let dec = self.decoder(codec)?;
        let packet = ff::Packet::copy(data);
        dec.send_packet(&packet).map_err(DecodeError::Decode)?;
        dec.send_eof().map_err(DecodeError::Decode)?;
        let mut frame = frame::Video::empty();
        let mut got = None;
        loop {
            match dec.receive_frame(&mut frame) {
                Ok(()) => {
                    got = Some(std::mem::replace(&mut frame, frame::Video::empty()));
                }
                Err(ff::Error::Eof) => break,
                Err(ff::Error::Other { errno }) if errno == ff::error::EAGAIN => break,
                Err(e) => return Err(DecodeError::Decode(e)),
            }
        }
        dec.flush();
        let frame = got.ok_or(DecodeError::NoPicture)?;
        if frame.width() == 0 || frame.height() == 0 {
            return Err(DecodeError::NoPicture);
        }
        Ok(Picture { frame })
    }

    fn scale(
        slot: &mut Option<(ScaleKey, scaling::Context)>,
        rebuilds: &mut u64,
        src: &frame::Video,
        dst_format: Pixel,
        width: u32,
        height: u32,
    ) -> Result<frame::Video, DecodeError> {
        let key = (src.format(), src.width(), src.height(), width, height);
        if slot.as_ref().is_none_or(|(k, _)| *k != key) {
            let ctx = scaling::Context::get(
                src.format(),
                src.width(),
                src.height(),
                dst_format,
                width,
                height,
                scaling::Flags::AREA,
            )
            .map_err(DecodeError::Scale)?;
            *slot = Some((key, ctx));
            *rebuilds += 1;
        }
        let Some((_, ctx)) = slot.as_mut() else {
            return Err(DecodeError::NoPicture);
        };
        let mut out = frame::Video::empty();
        ctx.run(src, &mut out).map_err(DecodeError::Scale)?;
        Ok(out)
    }

    /// The picture as a small greyscale thumb for sensing.
    pub fn thumb(&mut self, picture: &Picture) -> Result<Thumb, DecodeError> {
        let (w, h) = (
            THUMB_WIDTH,
            Thumb::height_for(picture.width(), picture.height()),
        );
        let grey = Self::scale(
            &mut self.thumb_scaler,
            &mut self.rebuilds,
            &picture.frame,
            Pixel::GRAY8,
            w as u32,
            h as u32,
        )?;
        let stride = grey.stride(0);
        let data = grey.data(0);
        let mut luma = Vec::with_capacity(w * h);
        for y in 0..h {
            let row = data
                .get(y * stride..y * stride + w)
                .ok_or(DecodeError::NoPicture)?;
            luma.extend_from_slice(row);
        }
        Ok(Thumb {
            width: w,
            height: h,
            luma,
        })
    }

    /// The picture as a JPEG `width` pixels wide (never wider than the picture), keeping the
    /// aspect ratio.
    pub fn jpeg(
        &mut self,
        picture: &Picture,
        width: u32,
        quality: u8,
    ) -> Result<(Vec<u8>, u32, u32), DecodeError> {
        let width = (width.min(picture.width()) & !1).max(2);
        let height = ((u64::from(picture.height()) * u64::from(width)
            / u64::from(picture.width().max(1))) as u32
            & !1)
            .max(2);
        let small = Self::scale(
            &mut self.jpeg_scaler,
            &mut self.rebuilds,
            &picture.frame,
            Pixel::YUVJ420P,
            width,
            height,
        )?;
        let key = (width, height, quality);
        if self.jpeg.as_ref().is_none_or(|(k, _)| *k != key) {
            self.jpeg = None;
            let found = ff::encoder::find(Id::MJPEG).ok_or(DecodeError::NoJpegEncoder)?;
            let mut enc = codec::Context::new_with_codec(found)
                .encoder()
                .video()
                .map_err(DecodeError::Jpeg)?;
            enc.set_width(width);
            enc.set_height(height);
            enc.set_format(Pixel::YUVJ420P);
            enc.set_time_base(ff::Rational::new(1, 25));
            let q = qscale(quality);
            enc.set_qmin(q);
            enc.set_qmax(q);
            enc.set_flags(codec::Flags::QSCALE);
            enc.set_global_quality(q * ff::ffi::FF_QP2LAMBDA);
            let opened = enc.open_as(found).map_err(DecodeError::Jpeg)?;
            self.jpeg = Some((key, opened));
            self.rebuilds += 1;
        }
        let Some((_, enc)) = self.jpeg.as_mut() else {
            return Err(DecodeError::NoJpegEncoder);
        };
        let mut small = small;
        // SAFETY: `small` is an owned, allocated frame; quality is a plain int field.
        unsafe {
            (*small.as_mut_ptr()).quality = qscale(quality) * ff::ffi::FF_QP2LAMBDA;
        }
        self.jpeg_pts += 1;
        small.set_pts(Some(self.jpeg_pts));
        let result = (|| {
            enc.send_frame(&small)?;
            let mut packet = ff::Packet::empty();
            enc.receive_packet(&mut packet)?;
            Ok(packet.data().map(<[u8]>::to_vec).unwrap_or_default())
        })();
        match result {
            Ok(bytes) if !bytes.is_empty() => Ok((bytes, width, height)),
            Ok(_) => {
                self.jpeg = None;
                Err(DecodeError::Jpeg(ff::Error::InvalidData))
            }
            Err(e) => {
                self.jpeg = None;
                Err(DecodeError::Jpeg(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One 320×240 keyframe each, made with `ffmpeg -f lavfi -i testsrc=size=320x240 -frames:v 1`.
    const H264: &[u8] = include_bytes!("testdata/key264.h264");
    const H265: &[u8] = include_bytes!("testdata/key265.h265");

    #[test]
    fn keyframes_decode_to_thumbs_and_jpegs_again_and_again() {
        Pictures::init().unwrap();
        let mut p = Pictures::default();
        for round in 0..3 {
            for (codec, data) in [(VideoCodec::H264, H264), (VideoCodec::H265, H265)] {
                let pic = p.decode(codec, data).unwrap();
                assert_eq!((pic.width(), pic.height()), (320, 240));
                let thumb = p.thumb(&pic).unwrap();
                assert_eq!((thumb.width, thumb.height), (THUMB_WIDTH, 96));
                let width = 160 + round * 16;
                let (jpeg, w, h) = p.jpeg(&pic, width, 80).unwrap();
                assert_eq!((w, h), (width, width * 3 / 4), "{codec:?} round {round}");
                assert!(jpeg.starts_with(&[0xFF, 0xD8]) && jpeg.ends_with(&[0xFF, 0xD9]));
            }
        }
        // Never wider than the picture.
        let pic = p.decode(VideoCodec::H264, H264).unwrap();
        assert_eq!(p.jpeg(&pic, 7680, 80).unwrap().1, 320);
    }

    #[test]
    fn a_new_picture_size_rebuilds_the_scalers_and_encoder() {
        const SMALL: &[u8] = include_bytes!("testdata/key264-176x144.h264");
        Pictures::init().unwrap();
        let mut p = Pictures::default();
        for (data, size, jpeg) in [
            (H264, (320, 240), (160, 120)),
            (SMALL, (176, 144), (160, 130)),
        ] {
            let pic = p.decode(VideoCodec::H264, data).unwrap();
            assert_eq!((pic.width(), pic.height()), size);
            let (bytes, w, h) = p.jpeg(&pic, 160, 60).unwrap();
            assert_eq!((w, h), jpeg);
            assert!(!bytes.is_empty());
            assert_eq!(
                p.thumb(&pic).unwrap().height,
                Thumb::height_for(size.0, size.1)
            );
        }
        // Decoder, then for each size: thumb scaler, JPEG scaler, JPEG encoder.
        assert_eq!(p.rebuilds, 1 + 2 * 3);
    }

    #[test]
    fn garbage_is_an_error_and_the_next_keyframe_decodes() {
        Pictures::init().unwrap();
        let mut p = Pictures::default();
        assert!(p
            .decode(VideoCodec::H264, &[0, 0, 0, 1, 0x65, 1, 2, 3])
            .is_err());
        assert!(p
            .decode(VideoCodec::H265, &[0xde, 0xad, 0xbe, 0xef])
            .is_err());
        assert!(p.decode(VideoCodec::H264, H264).is_ok());
        // Damaged keyframes (bytes flipped after the parameter sets) never panic; the decoder
        // keeps working afterwards.
        let mut seed = 0x2545_f491_u32;
        let mut failed = 0;
        for _ in 0..200 {
            for (codec, good) in [(VideoCodec::H264, H264), (VideoCodec::H265, H265)] {
                let mut bad = good.to_vec();
                for _ in 0..8 {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    let i = 64 + seed as usize % (bad.len() - 64);
                    bad[i] ^= (seed >> 24) as u8 | 1;
                }
                match p.decode(codec, &bad) {
                    Ok(pic) => {
                        p.thumb(&pic).unwrap();
                    }
                    Err(_) => failed += 1,
                }
            }
        }
        eprintln!("{failed} of 400 damaged keyframes refused");
        assert!(p.decode(VideoCodec::H265, H265).is_ok());
        assert!(p.decode(VideoCodec::H264, H264).is_ok());
    }
}

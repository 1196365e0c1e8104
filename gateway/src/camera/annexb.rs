//! Just enough of H.264/H.265 Annex B to find keyframes that retina does not flag and to keep
//! them decodable on their own.
//!
//! retina marks only IDR pictures as random access points, but many H.265 encoders start later
//! GOPs with CRA pictures, which decode on their own just as well once their parameter sets
//! come first. The session keeps the last parameter sets it saw and puts them in front of such
//! keyframes.

use super::decode::VideoCodec;

/// NAL units of an Annex B buffer, without their start codes.
pub(crate) fn nals(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&s| {
            // The next start code, and a leading zero of a 4-byte one.
            let mut e = s - 3;
            while e > 0 && data[e - 1] == 0 {
                e -= 1;
            }
            e
        })
        .chain(std::iter::once(data.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .filter_map(move |(s, e)| data.get(s..e.max(s)))
        .filter(|n| !n.is_empty())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nal {
    Param,
    Irap,
    Other,
}

fn kind(codec: VideoCodec, nal: &[u8]) -> Nal {
    match codec {
        VideoCodec::H264 => match nal[0] & 0x1F {
            7 | 8 => Nal::Param,
            5 => Nal::Irap,
            _ => Nal::Other,
        },
        VideoCodec::H265 => match (nal[0] >> 1) & 0x3F {
            32..=34 => Nal::Param,
            16..=23 => Nal::Irap,
            _ => Nal::Other,
        },
    }
}

/// Keeps a session's parameter sets and makes keyframes self-contained.
#[derive(Debug, Default)]
pub struct Keyframes {
    params: Vec<u8>,
}

impl Keyframes {
    /// Whether `data` is a keyframe by its NAL units (IDR, CRA or BLA); remembers the parameter
    /// sets it carries.
    pub fn inspect(&mut self, codec: VideoCodec, data: &[u8]) -> bool {
        let mut irap = false;
        let mut params = Vec::new();
        for nal in nals(data) {
            match kind(codec, nal) {
                Nal::Param => {
                    params.extend_from_slice(&[0, 0, 0, 1]);
                    params.extend_from_slice(nal);
                }
                Nal::Irap => irap = true,
                Nal::Other => {}
            }
        }
        if !params.is_empty() {
            self.params = params;
        }
        irap
    }

    /// `data` with the last parameter sets in front when it carries none.
    pub fn self_contained(&self, codec: VideoCodec, data: Vec<u8>) -> Vec<u8> {
        if nals(&data).any(|n| kind(codec, n) == Nal::Param) || self.params.is_empty() {
            return data;
        }
        let mut out = Vec::with_capacity(self.params.len() + data.len());
        out.extend_from_slice(&self.params);
        out.extend_from_slice(&data);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keyframes_and_prepends_the_last_parameter_sets() {
        let mut k = Keyframes::default();
        // H.265: VPS, SPS, PPS, IDR.
        let idr = [
            &[0, 0, 0, 1, 0x40, 1, 0xAA][..],
            &[0, 0, 1, 0x42, 1, 0xBB],
            &[0, 0, 1, 0x44, 1, 0xCC],
            &[0, 0, 1, 0x26, 1, 0xDD],
        ]
        .concat();
        assert!(k.inspect(VideoCodec::H265, &idr));
        let cra = vec![0, 0, 0, 1, 0x2A, 1, 0xEE]; // type 21
        let trail = vec![0, 0, 0, 1, 0x02, 1, 0xEE]; // type 1
        assert!(k.inspect(VideoCodec::H265, &cra));
        assert!(!k.inspect(VideoCodec::H265, &trail));
        let whole = k.self_contained(VideoCodec::H265, cra.clone());
        assert!(whole.ends_with(&cra) && whole.len() > cra.len());
        assert_eq!(nals(&whole).count(), 4);
        // A frame with its own parameter sets is left alone.
        assert_eq!(k.self_contained(VideoCodec::H265, idr.clone()), idr);
        // H.264 IDR.
        assert!(Keyframes::default().inspect(VideoCodec::H264, &[0, 0, 0, 1, 0x65, 0x88]));
        assert!(!Keyframes::default().inspect(VideoCodec::H264, &[0, 0, 0, 1, 0x41, 0x9A]));
        assert!(!Keyframes::default().inspect(VideoCodec::H264, &[1, 2, 3]));
    }
}

//! Fragmented MP4 (CMAF-style) without re-encoding: an init segment from the camera's
//! parameters, then one `moof`+`mdat` fragment per frame, so that a viewer can start on the
//! last keyframe and follow live with one frame of packaging delay.
//!
//! The sample entry (`avc1`/`hvc1` with its `avcC`/`hvcC`) comes from retina; everything else
//! is written here, box by box (ISO/IEC 14496-12).

/// Timescale of the video track: RTP's 90 kHz, so camera timestamps need no conversion.
pub const TIMESCALE: u32 = 90_000;

/// Writes a box: size, type, then what `body` writes.
fn boxed(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(kind);
    body(out);
    let size = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// A full box: version and flags first.
fn full(
    out: &mut Vec<u8>,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>),
) {
    boxed(out, kind, |o| {
        o.push(version);
        o.extend_from_slice(&flags.to_be_bytes()[1..]);
        body(o);
    });
}

fn u16s(o: &mut Vec<u8>, v: u16) {
    o.extend_from_slice(&v.to_be_bytes());
}
fn u32s(o: &mut Vec<u8>, v: u32) {
    o.extend_from_slice(&v.to_be_bytes());
}
fn u64s(o: &mut Vec<u8>, v: u64) {
    o.extend_from_slice(&v.to_be_bytes());
}

const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// The init segment (`ftyp` + `moov`) of one video track.
pub fn init_segment(sample_entry: &[u8], width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(700 + sample_entry.len());
    boxed(&mut out, b"ftyp", |o| {
        o.extend_from_slice(b"iso6");
        u32s(o, 0);
        for brand in [b"iso6", b"cmfc", b"isom", b"mp41"] {
            o.extend_from_slice(brand);
        }
    });
    boxed(&mut out, b"moov", |o| {
        full(o, b"mvhd", 0, 0, |o| {
            u32s(o, 0); // creation time
            u32s(o, 0); // modification time
            u32s(o, 1000);
            u32s(o, 0); // duration: unknown, live
            u32s(o, 0x0001_0000); // rate 1.0
            u16s(o, 0x0100); // volume 1.0
            o.extend_from_slice(&[0; 10]);
            MATRIX.iter().for_each(|&m| u32s(o, m));
            o.extend_from_slice(&[0; 24]);
            u32s(o, 2); // next track id
        });
        boxed(o, b"trak", |o| {
            full(o, b"tkhd", 0, 0x3, |o| {
                u32s(o, 0);
                u32s(o, 0);
                u32s(o, 1); // track id
                u32s(o, 0);
                u32s(o, 0); // duration
                o.extend_from_slice(&[0; 8]);
                u16s(o, 0); // layer
                u16s(o, 0); // alternate group
                u16s(o, 0); // volume
                u16s(o, 0);
                MATRIX.iter().for_each(|&m| u32s(o, m));
                u32s(o, width << 16);
                u32s(o, height << 16);
            });
            boxed(o, b"mdia", |o| {
                full(o, b"mdhd", 0, 0, |o| {
                    u32s(o, 0);
                    u32s(o, 0);
                    u32s(o, TIMESCALE);
                    u32s(o, 0);
                    u16s(o, 0x55c4); // "und"
                    u16s(o, 0);
                });
                full(o, b"hdlr", 0, 0, |o| {
                    u32s(o, 0);
                    o.extend_from_slice(b"vide");
                    o.extend_from_slice(&[0; 12]);
                    o.extend_from_slice(b"GridEdge video\0");
                });
                boxed(o, b"minf", |o| {
                    full(o, b"vmhd", 0, 1, |o| o.extend_from_slice(&[0; 8]));
                    boxed(o, b"dinf", |o| {
                        full(o, b"dref", 0, 0, |o| {
                            u32s(o, 1);
                            full(o, b"url ", 0, 1, |_| {});
                        });
                    });
                    boxed(o, b"stbl", |o| {
                        full(o, b"stsd", 0, 0, |o| {
                            u32s(o, 1);
                            o.extend_from_slice(sample_entry);
                        });
                        full(o, b"stts", 0, 0, |o| u32s(o, 0));
                        full(o, b"stsc", 0, 0, |o| u32s(o, 0));
                        full(o, b"stsz", 0, 0, |o| {
                            u32s(o, 0);
                            u32s(o, 0);
                        });
                        full(o, b"stco", 0, 0, |o| u32s(o, 0));
                    });
                });
            });
        });
        boxed(o, b"mvex", |o| {
            full(o, b"trex", 0, 0, |o| {
                u32s(o, 1); // track id
                u32s(o, 1); // sample description index
                u32s(o, 0);
                u32s(o, 0);
                u32s(o, 0);
            });
        });
    });
    out
}

/// One frame as a fragment: `moof` + `mdat`. `sample` is the frame in length-prefixed form
/// (as `avcC`/`hvcC` say: 4-byte lengths), `decode_time` and `duration` in [`TIMESCALE`].
pub fn fragment(
    sequence: u32,
    decode_time: u64,
    duration: u32,
    keyframe: bool,
    sample: &[u8],
) -> Vec<u8> {
    fragment_with(
        sequence,
        decode_time,
        duration,
        keyframe,
        sample.len(),
        |o| o.extend_from_slice(sample),
    )
}

/// A frame in Annex B straight into a fragment, its NAL units length-prefixed on the way (one
/// copy of the frame, not two); parameter sets and access unit delimiters are left out (they
/// live in the sample entry, or are not needed).
pub fn fragment_from_annexb(
    sequence: u32,
    decode_time: u64,
    duration: u32,
    keyframe: bool,
    h265: bool,
    data: &[u8],
) -> Vec<u8> {
    let nals: Vec<&[u8]> = crate::camera::annexb::nals(data)
        .filter(|nal| !out_of_band(h265, nal))
        .collect();
    let size = nals.iter().map(|n| 4 + n.len()).sum();
    fragment_with(sequence, decode_time, duration, keyframe, size, |o| {
        for nal in &nals {
            o.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            o.extend_from_slice(nal);
        }
    })
}

fn out_of_band(h265: bool, nal: &[u8]) -> bool {
    if h265 {
        matches!((nal[0] >> 1) & 0x3F, 32..=35)
    } else {
        matches!(nal[0] & 0x1F, 7..=9)
    }
}

fn fragment_with(
    sequence: u32,
    decode_time: u64,
    duration: u32,
    keyframe: bool,
    sample_size: usize,
    write_sample: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    let mut out = Vec::with_capacity(120 + sample_size);
    let mut data_offset_at = 0;
    boxed(&mut out, b"moof", |o| {
        full(o, b"mfhd", 0, 0, |o| u32s(o, sequence));
        boxed(o, b"traf", |o| {
            // default-base-is-moof: data offsets count from the start of this moof.
            full(o, b"tfhd", 0, 0x02_0000, |o| u32s(o, 1));
            full(o, b"tfdt", 1, 0, |o| u64s(o, decode_time));
            // data-offset, sample-duration, sample-size, sample-flags present.
            full(o, b"trun", 0, 0x0000_0701, |o| {
                u32s(o, 1);
                data_offset_at = o.len();
                u32s(o, 0);
                u32s(o, duration);
                u32s(o, sample_size as u32);
                // A keyframe depends on nothing; other frames depend on others and are not
                // sync samples.
                u32s(o, if keyframe { 0x0200_0000 } else { 0x0101_0000 });
            });
        });
    });
    let data_offset = (out.len() + 8) as u32;
    out[data_offset_at..data_offset_at + 4].copy_from_slice(&data_offset.to_be_bytes());
    boxed(&mut out, b"mdat", write_sample);
    out
}

/// The parameter sets of a stream, as NAL units with their headers.
pub enum ParameterSets<'a> {
    H264 {
        sps: &'a [u8],
        pps: &'a [u8],
    },
    H265 {
        vps: &'a [u8],
        sps: &'a [u8],
        pps: &'a [u8],
    },
}

/// The RBSP of a NAL unit: emulation prevention bytes (`00 00 03`) removed.
fn rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

fn nal_with_length(o: &mut Vec<u8>, nal: &[u8]) {
    u16s(o, nal.len() as u16);
    o.extend_from_slice(nal);
}

/// The `avc1`/`hvc1` sample entry with its decoder configuration record, built from the
/// parameter sets (retina builds the record only for MP4 framing; the gateway takes Annex B).
/// `None` when a parameter set is too short to read.
pub fn sample_entry(params: &ParameterSets<'_>, width: u16, height: u16) -> Option<Vec<u8>> {
    let (kind, config): (&[u8; 4], Vec<u8>) = match *params {
        ParameterSets::H264 { sps, pps } => {
            if sps.len() < 4 || pps.is_empty() {
                return None;
            }
            let mut c = Vec::new();
            boxed(&mut c, b"avcC", |o| {
                o.push(1);
                o.extend_from_slice(&sps[1..4]); // profile, compatibility, level
                o.push(0xFF); // 4-byte lengths
                o.push(0xE1); // one SPS
                nal_with_length(o, sps);
                o.push(1); // one PPS
                nal_with_length(o, pps);
            });
            (b"avc1", c)
        }
        ParameterSets::H265 { vps, sps, pps } => {
            // profile_tier_level follows the 2-byte NAL header and one byte of ids.
            let r = rbsp(sps);
            let ptl = r.get(3..15)?;
            let mut c = Vec::new();
            boxed(&mut c, b"hvcC", |o| {
                o.push(1);
                o.extend_from_slice(ptl); // profile space/tier/idc, compatibility, constraints, level
                u16s(o, 0xF000); // min_spatial_segmentation_idc 0
                o.push(0xFC); // parallelism unknown
                o.push(0xFD); // chroma 4:2:0
                o.push(0xF8); // 8-bit luma
                o.push(0xF8); // 8-bit chroma
                u16s(o, 0); // average frame rate unknown
                o.push(0x0F); // one temporal layer, nested, 4-byte lengths
                o.push(3);
                for (kind, nal) in [(32u8, vps), (33, sps), (34, pps)] {
                    o.push(0x80 | kind);
                    u16s(o, 1);
                    nal_with_length(o, nal);
                }
            });
            (b"hvc1", c)
        }
    };
    let mut out = Vec::new();
    boxed(&mut out, kind, |o| {
        o.extend_from_slice(&[0; 6]);
        u16s(o, 1); // data reference index
        o.extend_from_slice(&[0; 16]);
        u16s(o, width);
        u16s(o, height);
        u32s(o, 0x0048_0000); // 72 dpi
        u32s(o, 0x0048_0000);
        u32s(o, 0);
        u16s(o, 1); // frame count
        o.extend_from_slice(&[0; 32]); // compressor name
        u16s(o, 0x0018); // depth
        u16s(o, 0xFFFF);
        o.extend_from_slice(&config);
    });
    Some(out)
}

/// Annex B (start codes) to 4-byte length prefixes, leaving out parameter sets and access
/// unit delimiters (what [`fragment_from_annexb`] writes into `mdat`).
#[cfg(test)]
fn annexb_to_sample(h265: bool, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    for nal in crate::camera::annexb::nals(data).filter(|nal| !out_of_band(h265, nal)) {
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (type, size) of the top-level boxes.
    fn boxes(mut b: &[u8]) -> Vec<(String, usize)> {
        let mut v = Vec::new();
        while b.len() >= 8 {
            let size = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
            v.push((String::from_utf8_lossy(&b[4..8]).into_owned(), size));
            b = &b[size.min(b.len())..];
        }
        v
    }

    #[test]
    fn an_avc_sample_entry_carries_the_parameter_sets() {
        let sps = [0x67, 0x42, 0xC0, 0x1E, 0xDA, 0x02];
        let pps = [0x68, 0xCE, 0x3C, 0x80];
        let e = sample_entry(
            &ParameterSets::H264 {
                sps: &sps,
                pps: &pps,
            },
            640,
            360,
        )
        .unwrap();
        assert_eq!(&e[4..8], b"avc1");
        assert_eq!(
            u32::from_be_bytes(e[0..4].try_into().unwrap()) as usize,
            e.len()
        );
        let avcc = e.windows(4).position(|w| w == b"avcC").unwrap() + 4;
        assert_eq!(&e[avcc..avcc + 6], &[1, 0x42, 0xC0, 0x1E, 0xFF, 0xE1]);
        assert!(e.ends_with(&[1, 0, 4, 0x68, 0xCE, 0x3C, 0x80]));
        assert_eq!(rbsp(&[0, 0, 3, 1, 0, 0, 3]), [0, 0, 1, 0, 0]);
    }

    #[test]
    fn init_and_fragments_are_well_formed_boxes() {
        let entry = {
            let mut e = Vec::new();
            boxed(&mut e, b"avc1", |o| o.extend_from_slice(&[0; 78]));
            e
        };
        let init = init_segment(&entry, 640, 360);
        let top = boxes(&init);
        assert_eq!(
            top.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(),
            ["ftyp", "moov"]
        );
        assert_eq!(top.iter().map(|b| b.1).sum::<usize>(), init.len());
        let sample = annexb_to_sample(
            false,
            &[
                0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 1, 0x65, 9, 9, 9,
            ],
        );
        assert_eq!(sample, [0, 0, 0, 4, 0x65, 9, 9, 9]);
        let frag = fragment(7, 90_000, 3600, true, &sample);
        let top = boxes(&frag);
        assert_eq!(
            top.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(),
            ["moof", "mdat"]
        );
        // The data offset points at the sample inside mdat.
        let moof = top[0].1;
        let pos = frag.windows(4).position(|w| w == b"trun").unwrap() + 4 + 4 + 4;
        let offset = u32::from_be_bytes(frag[pos..pos + 4].try_into().unwrap()) as usize;
        assert_eq!(offset, moof + 8);
        assert_eq!(&frag[offset..], &sample[..]);
        let annexb = [
            0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 1, 0x65, 9, 9, 9,
        ];
        assert_eq!(
            fragment_from_annexb(7, 90_000, 3600, true, false, &annexb),
            frag
        );
    }
}

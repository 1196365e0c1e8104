//! HTTP byte ranges (RFC 9110 §14): what kiosks use to resume a download or seek in a video.
//! One range is served; a request for several gets the whole file (which the RFC allows).

use std::ops::Range;

/// What a `Range` header asks of a file of a known length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// No usable range: the whole file, 200.
    Whole,
    /// These bytes, 206.
    Part(Range<u64>),
    /// Nothing of the file fits: 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Reads a `Range` header value for a file of `len` bytes. A header that is not a byte range
/// is ignored (the whole file), as the RFC asks.
pub fn wanted(header: Option<&str>, len: u64) -> Wanted {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Wanted::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (first.is_empty(), last.is_empty()) {
        // `bytes=-N`: the last N bytes.
        (true, false) => match number(last) {
            Some(0) => Wanted::Unsatisfiable,
            Some(n) => Wanted::Part(len.saturating_sub(n)..len),
            None => Wanted::Whole,
        },
        (false, _) => {
            let Some(start) = number(first) else {
                return Wanted::Whole;
            };
            let end = if last.is_empty() {
                len
            } else {
                match number(last) {
                    Some(l) if l >= start => l.saturating_add(1).min(len),
                    _ => return Wanted::Whole,
                }
            };
            if start >= len {
                Wanted::Unsatisfiable
            } else {
                Wanted::Part(start..end)
            }
        }
        (true, true) => Wanted::Whole,
    }
}

/// The `Content-Range` value of a part.
pub fn content_range(part: &Range<u64>, len: u64) -> String {
    format!("bytes {}-{}/{len}", part.start, part.end.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_of_a_file() {
        let w = |h| wanted(Some(h), 1000);
        assert_eq!(w("bytes=0-99"), Wanted::Part(0..100));
        assert_eq!(w("bytes=900-"), Wanted::Part(900..1000));
        assert_eq!(w("bytes=-100"), Wanted::Part(900..1000));
        assert_eq!(w("bytes=-5000"), Wanted::Part(0..1000));
        assert_eq!(w("bytes=990-2000"), Wanted::Part(990..1000));
        assert_eq!(w("bytes=1000-"), Wanted::Unsatisfiable);
        assert_eq!(w("bytes=-0"), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=0-"), 0), Wanted::Unsatisfiable);
    }

    #[test]
    fn what_is_not_one_byte_range_is_the_whole_file() {
        for h in [
            "items=0-9",
            "bytes=5-1",
            "bytes=a-9",
            "bytes=-",
            "bytes=0-9,20-29",
            "bytes=+1-9",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(wanted(Some(h), 1000), Wanted::Whole, "{h}");
        }
        assert_eq!(wanted(None, 1000), Wanted::Whole);
    }

    #[test]
    fn content_range_names_the_last_byte() {
        assert_eq!(content_range(&(0..100), 1000), "bytes 0-99/1000");
    }
}

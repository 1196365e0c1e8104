//! Receipts of residents' submissions.

/// The alphabet of a receipt's check code: digits and capitals, without I, L, O and U, so that
/// a resident reading it off a slip cannot confuse them (Crockford's base 32).
pub const RECEIPT_CHECK_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Characters in a receipt's check code: 40 random bits.
pub const RECEIPT_CHECK_LEN: usize = 8;

/// The receipt of a resident's submission: `<gateway>-<seq>-<check>`. The gateway and sequence
/// number make it unique; the check code, drawn at random when the submission is taken and
/// carried in its event (`payload.check`), makes it unguessable — a receipt is readable only by
/// who holds it whole.
pub fn receipt(gateway: &str, seq: u64, check: &str) -> String {
    format!("{gateway}-{seq:06}-{check}")
}

/// Whether `s` is a well-formed check code.
pub fn is_receipt_check(s: &str) -> bool {
    s.len() == RECEIPT_CHECK_LEN && s.bytes().all(|b| RECEIPT_CHECK_ALPHABET.contains(&b))
}

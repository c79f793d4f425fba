//! Word-at-a-time scans of [`super::lexer`]'s hot paths: the plain run of a string and a plain
//! unsigned integer, eight bytes a step (strings and numbers are most of an event's bytes).

const ONES: u64 = u64::MAX / 255;
const HIGH: u64 = ONES << 7;

/// Length of the run of `bytes` up to the first byte a string cannot hold as is: a quote, a
/// backslash or a control character (all of `bytes` when there is none). Eight bytes a step:
/// strings are most of an event's bytes.
#[inline]
pub(super) fn plain_run(bytes: &[u8]) -> usize {
    let mut i = 0;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        // A byte of `x` is zero iff its high bit is set in `(x - ONES) & !x` (lowest hit exact).
        let zero_in = |x: u64| x.wrapping_sub(ONES) & !x;
        let hits = (w.wrapping_sub(ONES * 0x20) & !w)
            | zero_in(w ^ (ONES * u64::from(b'"')))
            | zero_in(w ^ (ONES * u64::from(b'\\')));
        let hits = hits & HIGH;
        if hits != 0 {
            return i + hits.trailing_zeros() as usize / 8;
        }
        i += 8;
    }
    i + bytes[i..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(bytes.len() - i)
}

/// A non-negative integer of at most 19 digits at the start of `bytes` that JSON's grammar
/// accepts and that ends there (no fraction, no exponent): its value and length. Anything
/// else is left to the general number reader.
#[inline(always)]
pub(super) fn plain_unsigned(bytes: &[u8]) -> Option<(u64, usize)> {
    let (v, len) = digits(bytes)?;
    let leading_zero = len > 1 && bytes[0] == b'0';
    let ends = !matches!(bytes.get(len), Some(b'.' | b'e' | b'E' | b'0'..=b'9'));
    (len > 0 && !leading_zero && ends).then_some((v, len))
}

/// The run of ASCII digits at the start of `bytes`: its value and length, `None` past 19
/// digits (where a `u64` could overflow). Eight bytes a step while eight are left.
#[inline(always)]
fn digits(bytes: &[u8]) -> Option<(u64, usize)> {
    let (mut v, mut len) = (0u64, 0usize);
    while let Some(chunk) = bytes.get(len..len + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        // A byte is a digit iff its high nibble is 3 before and after adding 6.
        let not_digit = ((w & (ONES * 0xF0)) ^ (ONES * 0x30))
            | ((w.wrapping_add(ONES * 0x06) & (ONES * 0xF0)) ^ (ONES * 0x30));
        let n = (not_digit.trailing_zeros() / 8) as usize;
        if n == 0 {
            return Some((v, len));
        }
        if len + n > 19 {
            return None;
        }
        // The first `n` digits moved to the top bytes: the bytes below read as leading zeros.
        let w = w.wrapping_sub(ONES * u64::from(b'0')) << (64 - 8 * n);
        v = v * POW10[n] + eight_digits(w);
        len += n;
        if n < 8 {
            return Some((v, len));
        }
    }
    while let Some(&b @ b'0'..=b'9') = bytes.get(len) {
        if len == 19 {
            return None;
        }
        v = v * 10 + u64::from(b - b'0');
        len += 1;
    }
    Some((v, len))
}

/// Powers of ten up to 10⁸.
const POW10: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// The value of eight decimal digits, one a byte (0–9, the first in the lowest byte): pairs,
/// then quads, then the whole, each step one multiply-add of the halves.
#[inline(always)]
fn eight_digits(w: u64) -> u64 {
    let pairs = (w.wrapping_mul(10) + (w >> 8)) & 0x00FF_00FF_00FF_00FF;
    let quads = (pairs.wrapping_mul(100) + (pairs >> 16)) & 0x0000_FFFF_0000_FFFF;
    (quads.wrapping_mul(10_000) + (quads >> 32)) & 0xFFFF_FFFF
}

#[cfg(test)]
mod tests {
    use super::plain_unsigned;

    #[test]
    fn plain_unsigned_reads_every_length_and_stops_where_the_grammar_says() {
        for len in 1..=19 {
            let digits: String = (0..len).map(|i| char::from(b'1' + (i % 9) as u8)).collect();
            let want: u64 = digits.parse().unwrap();
            for tail in ["", "}", ",\"x\":1234567890}", " "] {
                let text = format!("{digits}{tail}");
                assert_eq!(plain_unsigned(text.as_bytes()), Some((want, len)), "{text}");
            }
        }
        for refused in [
            "",
            "x",
            "01",
            "00",
            "1.5",
            "1e3",
            "12345678901234567890",
            "-1",
        ] {
            assert_eq!(plain_unsigned(refused.as_bytes()), None, "{refused}");
        }
        assert_eq!(plain_unsigned(b"0}"), Some((0, 1)));
        assert_eq!(plain_unsigned(b"18446744073709551615"), None);
        assert_eq!(
            plain_unsigned(b"9999999999999999999,"),
            Some((9_999_999_999_999_999_999, 19))
        );
    }
}

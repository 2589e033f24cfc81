//! The few Python semantics the Kubernetes launcher inherits from upstream's Python code:
//! `int(str)` and `float(str)` parsing, `repr(float)`, `repr(str)`, and the exact integer value of
//! a float (`int(f)`).

/// Python's `str.isspace()` (what `int()` and `float()` strip), Unicode 14.
pub(crate) fn is_space(c: char) -> bool {
    matches!(c,
        '\t'..='\r' | '\u{1c}'..=' ' | '\u{85}' | '\u{a0}' | '\u{1680}' | '\u{2000}'..='\u{200a}'
        | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}')
}

/// The code points of every Unicode decimal digit zero (category Nd, Unicode 14): each is
/// followed by its nine siblings. Python's `int()` and `float()` accept all of them.
const DIGIT_ZEROS: [u32; 66] = [
    0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66,
    0xDE6, 0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650,
    0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x16A60, 0x16AC0, 0x16B50,
    0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0,
];

fn decimal_digit(c: char) -> Option<u8> {
    let cp = c as u32;
    let i = DIGIT_ZEROS.partition_point(|z| *z <= cp);
    let zero = DIGIT_ZEROS[i.checked_sub(1)?];
    (cp - zero < 10).then(|| (cp - zero) as u8)
}

/// CPython's default `sys.get_int_max_str_digits()`: longer decimal strings raise `ValueError`.
const MAX_STR_DIGITS: usize = 4300;

/// An integer as Python's `int()` reads it from a string (arbitrary size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PyInt {
    negative: bool,
    /// Decimal digits without leading zeros ("0" for zero).
    digits: String,
}

impl PyInt {
    /// `int(s)`: surrounding whitespace, one optional sign, decimal digits (any script) with
    /// single underscores between them. `None` where Python raises `ValueError`.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let s = s.trim_matches(is_space);
        let (negative, body) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        let mut digits = String::with_capacity(body.len());
        let mut after_digit = false;
        let mut underscore = false;
        for c in body.chars() {
            if c == '_' {
                if !after_digit {
                    return None;
                }
                after_digit = false;
                underscore = true;
                continue;
            }
            let d = decimal_digit(c)?;
            digits.push(char::from(b'0' + d));
            after_digit = true;
            underscore = false;
        }
        if digits.is_empty() || underscore || digits.len() > MAX_STR_DIGITS {
            return None;
        }
        let trimmed = digits.trim_start_matches('0');
        let digits = if trimmed.is_empty() { "0" } else { trimmed };
        Some(Self {
            negative: negative && digits != "0",
            digits: digits.to_owned(),
        })
    }

    /// The value when it fits an `i128`.
    pub(crate) fn to_i128(&self) -> Option<i128> {
        let magnitude: i128 = self.digits.parse().ok()?;
        Some(if self.negative { -magnitude } else { magnitude })
    }
}

impl std::fmt::Display for PyInt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.negative {
            f.write_str("-")?;
        }
        f.write_str(&self.digits)
    }
}

/// `float(s)`: surrounding whitespace, digits of any script, underscores only between digits,
/// `inf`/`infinity`/`nan` in any case. `None` where Python raises `ValueError`.
pub(crate) fn parse_float(s: &str) -> Option<f64> {
    let s = s.trim_matches(is_space);
    let chars: Vec<char> = s
        .chars()
        .map(|c| match decimal_digit(c) {
            Some(d) => char::from(b'0' + d),
            None => c,
        })
        .collect();
    let mut ascii = String::with_capacity(chars.len());
    for (i, c) in chars.iter().enumerate() {
        if *c == '_' {
            let digit_before = i > 0 && chars[i - 1].is_ascii_digit();
            let digit_after = chars.get(i + 1).is_some_and(char::is_ascii_digit);
            if !(digit_before && digit_after) {
                return None;
            }
            continue;
        }
        if !c.is_ascii() {
            return None;
        }
        ascii.push(*c);
    }
    // Rust's grammar is Python's, less the underscores handled above.
    ascii.parse().ok()
}

/// Python's `repr(float)` (also `str(float)`): the shortest digits that round-trip, positional
/// for decimal exponents in -4..16, else scientific with a signed two-digit-minimum exponent.
pub(crate) fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if f == 0.0 {
        return format!("{sign}0.0");
    }
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').expect("LowerExp has an exponent");
    let exp: i32 = exp.parse().expect("LowerExp exponent is an integer");
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..16).contains(&exp) {
        let body = if exp >= 0 {
            let point = exp as usize + 1;
            if digits.len() <= point {
                format!("{digits}{}.0", "0".repeat(point - digits.len()))
            } else {
                format!("{}.{}", &digits[..point], &digits[point..])
            }
        } else {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        };
        format!("{sign}{body}")
    } else {
        let mantissa = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exp.abs())
    }
}

/// `str(int(f))` for a finite float: its integer part, exactly.
pub(crate) fn float_trunc_decimal(f: f64) -> String {
    let t = f.trunc();
    if t.abs() < 1e18 {
        return format!("{}", t as i64);
    }
    let bits = t.abs().to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32 - 1075;
    let mantissa = (bits & ((1u64 << 52) - 1)) | (1u64 << 52);
    // Base 10^9 limbs, least significant first; exponent > 0 here since |t| >= 1e18 > 2^53.
    let mut limbs: Vec<u64> = vec![mantissa % 1_000_000_000, mantissa / 1_000_000_000];
    for _ in 0..exponent {
        let mut carry = 0;
        for limb in &mut limbs {
            let v = *limb * 2 + carry;
            *limb = v % 1_000_000_000;
            carry = v / 1_000_000_000;
        }
        if carry > 0 {
            limbs.push(carry);
        }
    }
    while limbs.len() > 1 && limbs.last() == Some(&0) {
        limbs.pop();
    }
    let mut out = String::from(if t < 0.0 { "-" } else { "" });
    let mut iter = limbs.iter().rev();
    if let Some(first) = iter.next() {
        out.push_str(&first.to_string());
    }
    for limb in iter {
        out.push_str(&format!("{limb:09}"));
    }
    out
}

/// Whether Python's `str.isprintable()` holds for a non-ASCII character. Exact for control,
/// separator, format and private-use characters; unassigned code points count as printable.
fn printable_non_ascii(c: char) -> bool {
    !matches!(c as u32,
        0x80..=0xA0 | 0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x890..=0x891 | 0x8E2
        | 0x1680 | 0x180E | 0x2000..=0x200F | 0x2028..=0x202F | 0x205F..=0x2064
        | 0x2066..=0x206F | 0x3000 | 0xD800..=0xF8FF | 0xFEFF | 0xFFF9..=0xFFFB | 0xFFFE..=0xFFFF
        | 0x110BD | 0x110CD | 0x13430..=0x13438 | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
        | 0xE0001 | 0xE0020..=0xE007F | 0xF0000..)
}

/// Python's `repr(str)`.
pub(crate) fn str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_ascii() || printable_non_ascii(c) => out.push(c),
            c if (c as u32) <= 0xff => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_parsing_like_python() {
        for (input, expected) in [
            ("1000", "1000"),
            ("  +1000\n", "1000"),
            ("1_000", "1000"),
            ("0001", "1"),
            ("-0", "0"),
            ("-12", "-12"),
            ("\u{3000}7\u{a0}", "7"),
            ("\u{663}", "3"),
            ("\u{ff11}\u{ff10}", "10"),
        ] {
            let parsed = PyInt::parse(input).map(|i| i.to_string());
            assert_eq!(parsed.as_deref(), Some(expected), "{input:?}");
        }
        for refused in [
            "1__0", "_1", "1_", "", "+", "--1", "+-1", "1 0", "0x10", "1.0", "\u{b2}",
        ] {
            assert!(PyInt::parse(refused).is_none(), "{refused:?}");
        }
        assert!(PyInt::parse(&"9".repeat(4300)).is_some());
        assert!(PyInt::parse(&"9".repeat(4301)).is_none());
        assert_eq!(
            PyInt::parse("99999999999999999999").unwrap().to_i128(),
            Some(99999999999999999999)
        );
        assert_eq!(PyInt::parse(&"9".repeat(50)).unwrap().to_i128(), None);
    }

    #[test]
    fn float_parsing_like_python() {
        for (input, expected) in [
            ("1.5", 1.5),
            (" 1e3 ", 1000.0),
            ("1_0.2_5", 10.25),
            (".5", 0.5),
            ("5.", 5.0),
            ("-Infinity", f64::NEG_INFINITY),
            ("iNf", f64::INFINITY),
        ] {
            assert_eq!(parse_float(input), Some(expected), "{input:?}");
        }
        for refused in ["1_.5", "1e", "abc", "0x10"] {
            assert_eq!(parse_float(refused), None, "{refused:?}");
        }
        assert!(parse_float("nan").unwrap().is_nan());
    }

    #[test]
    fn float_repr_like_python() {
        for (f, expected) in [
            (1.0, "1.0"),
            (3.25, "3.25"),
            (-0.0, "-0.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e300, "1.5e+300"),
            (123456789.125, "123456789.125"),
            (1.0 / 3.0, "0.3333333333333333"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(float_repr(f), expected);
        }
    }

    #[test]
    fn float_truncation_is_exact() {
        assert_eq!(float_trunc_decimal(12.7), "12");
        assert_eq!(float_trunc_decimal(-12.7), "-12");
        assert_eq!(float_trunc_decimal(1e18), "1000000000000000000");
        assert_eq!(float_trunc_decimal(1e20), "100000000000000000000");
        assert_eq!(
            float_trunc_decimal(-2f64.powi(70)),
            "-1180591620717411303424"
        );
    }

    #[test]
    fn str_repr_like_python() {
        for (s, expected) in [
            ("abc", "'abc'"),
            ("it's", "\"it's\""),
            ("it's \"x\"", "'it\\'s \"x\"'"),
            ("a\nb\t\\", "'a\\nb\\t\\\\'"),
            ("\u{7}\u{7f}", "'\\x07\\x7f'"),
            ("é\u{a0}\u{2028}", "'é\\xa0\\u2028'"),
            ("\u{1F600}", "'\u{1F600}'"),
        ] {
            assert_eq!(str_repr(s), expected, "{s:?}");
        }
    }
}

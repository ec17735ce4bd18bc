//! Kubernetes resource quantities (`500m`, `2`, `0.5`, `128Mi`, `1e3`): the one parser behind
//! admission, which refuses what Kubernetes refuses, and the scheduler, which counts with the
//! values. The grammar is Kubernetes' (`resource.ParseQuantity`): an optional sign, a decimal
//! number (digits with at most one point, at least one of either), then one suffix: binary
//! (`Ki` `Mi` `Gi` `Ti` `Pi` `Ei`), decimal SI (`n` `u` `m`, none, `k` `M` `G` `T` `P` `E`) or a
//! decimal exponent (`e` or `E`, then an integer). Values are read as Kubernetes reads them:
//! rounded up, away from zero, to whole units or thousandths.

use std::borrow::Cow;

use serde_json::Value;

/// The pattern Kubernetes quotes for a quantity that does not parse.
pub const PATTERN: &str = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";

/// Why a text is not a quantity, in Kubernetes' words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not of the form number-then-suffix (`abc`, `1.2.3`, `1KiB`, empty).
    #[error("quantities must match the regular expression '{PATTERN}'")]
    Format,
    /// Of that form, but the suffix is none of the known ones (`1K`, `1m3`).
    #[error("unable to parse quantity's suffix")]
    Suffix,
}

/// A parsed quantity: `±digits × 10^exp10 × 2^exp2`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    /// The number's digits without the point or leading zeros ("" for zero).
    digits: String,
    exp10: i64,
    exp2: u32,
}

/// Most decimal digits kept exactly (more are rounded up, which only matters far past i64).
const MAX_DIGITS: usize = 36;

fn suffix(s: &str) -> Result<(i64, u32), QuantityError> {
    let decimal = match s {
        "n" => Some(-9),
        "u" => Some(-6),
        "m" => Some(-3),
        "" => Some(0),
        "k" => Some(3),
        "M" => Some(6),
        "G" => Some(9),
        "T" => Some(12),
        "P" => Some(15),
        "E" => Some(18),
        _ => None,
    };
    if let Some(e) = decimal {
        return Ok((e, 0));
    }
    let binary = match s {
        "Ki" => Some(10),
        "Mi" => Some(20),
        "Gi" => Some(30),
        "Ti" => Some(40),
        "Pi" => Some(50),
        "Ei" => Some(60),
        _ => None,
    };
    if let Some(e) = binary {
        return Ok((0, e));
    }
    match s.strip_prefix(['e', 'E']) {
        Some(exp) if !exp.is_empty() => exp
            .parse::<i64>()
            .map(|e| (e, 0))
            .map_err(|_| QuantityError::Suffix),
        _ => Err(QuantityError::Suffix),
    }
}

impl Quantity {
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        let bytes = s.as_bytes();
        let (negative, rest) = match bytes.first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let digits_end = |t: &str| t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let whole_len = digits_end(rest);
        let (whole, after) = rest.split_at(whole_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(t) => t.split_at(digits_end(t)),
            None => ("", after),
        };
        if after.len() == rest.len() {
            // Neither a digit nor a point.
            return Err(QuantityError::Format);
        }
        // The suffix: letters of the SI and binary suffixes, then an optional signed integer,
        // and nothing else.
        let letters = after
            .find(|c: char| !"eEinumkKMGTP".contains(c))
            .unwrap_or(after.len());
        let tail = &after[letters..];
        let tail = tail.strip_prefix(['+', '-']).unwrap_or(tail);
        if !tail.bytes().all(|b| b.is_ascii_digit()) {
            return Err(QuantityError::Format);
        }
        let (exp10, exp2) = suffix(after)?;
        let digits = format!("{whole}{frac}").trim_start_matches('0').to_string();
        let exp10 = exp10
            .checked_sub(frac.len() as i64)
            .ok_or(QuantityError::Suffix)?;
        Ok(Quantity {
            negative,
            digits,
            exp10,
            exp2,
        })
    }

    /// Whether the quantity is below zero.
    pub fn is_negative(&self) -> bool {
        self.negative && !self.digits.is_empty()
    }

    /// The value in whole units, rounded up away from zero (saturating at i64's bounds).
    pub fn value(&self) -> i64 {
        self.scaled(0)
    }

    /// The value in thousandths (CPU in millicores), rounded up away from zero.
    pub fn milli_value(&self) -> i64 {
        self.scaled(3)
    }

    /// `|value| × 10^shift`, rounded up, with the quantity's sign.
    fn scaled(&self, shift: i64) -> i64 {
        let kept = self.digits.len().min(MAX_DIGITS);
        let (head, dropped) = self.digits.split_at(kept);
        let inexact = dropped.bytes().any(|b| b != b'0');
        let mut n: u128 = head
            .bytes()
            .fold(0u128, |n, b| n * 10 + u128::from(b - b'0'));
        let exp = self
            .exp10
            .saturating_add(dropped.len() as i64)
            .saturating_add(shift);
        let magnitude: u128 = if n == 0 {
            0
        } else {
            n = n.saturating_mul(1u128 << self.exp2);
            if exp >= 0 {
                u32::try_from(exp)
                    .ok()
                    .and_then(|e| 10u128.checked_pow(e))
                    .and_then(|f| n.checked_mul(f))
                    .unwrap_or(u128::MAX)
            } else {
                match u32::try_from(exp.unsigned_abs())
                    .ok()
                    .and_then(|e| 10u128.checked_pow(e))
                {
                    Some(d) => n / d + u128::from(!n.is_multiple_of(d) || inexact),
                    // Below one part in 10^38 of a unit: rounds up to one.
                    None => 1,
                }
            }
        };
        let magnitude = i64::try_from(magnitude).unwrap_or(i64::MAX);
        if self.negative {
            -magnitude
        } else {
            magnitude
        }
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Quantity, QuantityError> {
        Quantity::parse(s)
    }
}

/// A quantity's text as JSON carries it: a string, or a number (YAML's `cpu: 2`, which
/// Kubernetes accepts too). None for anything else.
pub fn text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// The quantity at `v`, if it is one.
pub fn of_value(v: &Value) -> Option<Quantity> {
    text(v).and_then(|t| Quantity::parse(&t).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_kubernetes_accepts_parses_to_its_values() {
        // (text, whole units, thousandths)
        let cases: &[(&str, i64, i64)] = &[
            ("0", 0, 0),
            ("2", 2, 2000),
            ("+1", 1, 1000),
            ("0.5", 1, 500),
            (".5", 1, 500),
            ("1.", 1, 1000),
            (".", 0, 0),
            ("500m", 1, 500),
            ("100n", 1, 1),
            ("100u", 1, 1),
            ("1500u", 1, 2),
            ("1e3", 1000, 1_000_000),
            ("1E2", 100, 100_000),
            ("1e-3", 1, 1),
            ("2.5e+1", 25, 25_000),
            ("1k", 1000, 1_000_000),
            ("1M", 1_000_000, 1_000_000_000),
            ("1G", 1_000_000_000, 1_000_000_000_000),
            ("1E", 1_000_000_000_000_000_000, i64::MAX),
            ("1Ki", 1024, 1_024_000),
            ("128Mi", 128 << 20, (128 << 20) * 1000),
            ("1Gi", 1 << 30, (1 << 30) * 1000),
            ("1.5Gi", 3 << 29, (3 << 29) * 1000),
            ("8Ei", i64::MAX, i64::MAX),
            ("0.000000000000000000000000000000000000000001", 1, 1),
            (
                "123456789012345678901234567890123456789012345",
                i64::MAX,
                i64::MAX,
            ),
            ("-1", -1, -1000),
            ("-0.5", -1, -500),
        ];
        for (text, units, milli) in cases {
            let q = Quantity::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!((q.value(), q.milli_value()), (*units, *milli), "{text:?}");
        }
        assert!(Quantity::parse("-1").is_ok_and(|q| q.is_negative()));
        assert!(Quantity::parse("-0").is_ok_and(|q| !q.is_negative()));
        assert!(Quantity::parse("1m").is_ok_and(|q| !q.is_negative()));
    }

    #[test]
    fn what_kubernetes_refuses_is_an_error_of_its_kind() {
        use QuantityError::{Format, Suffix};
        let cases: &[(&str, QuantityError)] = &[
            ("", Format),
            ("abc", Format),
            ("1.2.3", Format),
            ("1KiB", Format),
            ("--1", Format),
            ("+", Format),
            ("k", Format),
            (" 1", Format),
            ("1 ", Format),
            ("1Mi ", Format),
            ("0x10", Format),
            ("1K", Suffix),
            ("1m3", Suffix),
            ("1e", Suffix),
            ("1e+", Suffix),
            ("1Kii", Suffix),
            ("1e99999999999999999999", Suffix),
        ];
        for (text, want) in cases {
            assert_eq!(Quantity::parse(text), Err(*want), "{text:?}");
        }
        assert_eq!(
            Format.to_string(),
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        );
    }

    #[test]
    fn json_numbers_are_quantities_too() {
        let q = |v: Value| of_value(&v).map(|q| q.milli_value());
        assert_eq!(q(serde_json::json!(2)), Some(2000));
        assert_eq!(q(serde_json::json!(0.25)), Some(250));
        assert_eq!(q(serde_json::json!("250m")), Some(250));
        assert_eq!(q(serde_json::json!(true)), None);
        assert_eq!(q(serde_json::json!("lots")), None);
    }
}

//! Kubernetes resource quantities (`500m`, `2`, `1.5`, `128Mi`, `1G`) as integers: CPU in
//! millicores, everything else in whole units (bytes for memory).

/// The value of `q` times 1000 (milli-units), or None if it is not a quantity.
pub fn milli(q: &str) -> Option<i128> {
    let q = q.trim();
    let (number, factor): (&str, i128) = if let Some(n) = q.strip_suffix('m') {
        (n, 1)
    } else {
        const SUFFIXES: &[(&str, i128)] = &[
            ("Ki", 1 << 10),
            ("Mi", 1 << 20),
            ("Gi", 1 << 30),
            ("Ti", 1 << 40),
            ("Pi", 1 << 50),
            ("Ei", 1 << 60),
            ("k", 1_000),
            ("M", 1_000_000),
            ("G", 1_000_000_000),
            ("T", 1_000_000_000_000),
            ("P", 1_000_000_000_000_000),
            ("E", 1_000_000_000_000_000_000),
        ];
        match SUFFIXES.iter().find(|(s, _)| q.ends_with(s)) {
            Some((s, f)) => (&q[..q.len() - s.len()], f * 1000),
            None => (q, 1000),
        }
    };
    // Decimal numbers: whole part and up to 9 fractional digits.
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    let whole: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    if !frac.chars().all(|c| c.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let frac_value: i128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let scale = 10i128.pow(frac.len() as u32);
    Some(whole * factor + frac_value * factor / scale)
}

/// CPU in millicores.
pub fn cpu_millis(q: &str) -> Option<i64> {
    milli(q).map(|m| m as i64)
}

/// Memory (or any count) in whole units.
pub fn units(q: &str) -> Option<i64> {
    milli(q).map(|m| (m / 1000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_like_kubernetes() {
        assert_eq!(cpu_millis("500m"), Some(500));
        assert_eq!(cpu_millis("2"), Some(2000));
        assert_eq!(cpu_millis("0.25"), Some(250));
        assert_eq!(units("128Mi"), Some(128 << 20));
        assert_eq!(units("1Gi"), Some(1 << 30));
        assert_eq!(units("1G"), Some(1_000_000_000));
        assert_eq!(units("110"), Some(110));
        assert_eq!(units("lots"), None);
    }
}

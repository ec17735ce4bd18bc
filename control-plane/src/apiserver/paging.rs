//! Lists in pages, as Kubernetes' `limit`/`continue`: a page holds at most the asked number of
//! objects and at most `MAX_PAGE_BYTES` of them (so that an answer stays under the API's
//! message limit), and the continue token carries the revision the list is read at and the key
//! to go on from, so every page of one list shows the store at the same revision.

use skiff_api::ApiError;

/// Objects read from the store per step while filling a page.
pub const BATCH: usize = 500;
/// Encoded objects per page, at most (one larger object still makes a page of its own).
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The token for going on from `key` at `revision`.
pub fn encode(revision: i64, key: &str) -> String {
    hex(format!("{revision}\n{key}").as_bytes())
}

/// The revision and key a token names; a token that was not made by `encode` is refused.
pub fn decode(token: &str) -> Result<(i64, String), ApiError> {
    let bad = || ApiError::bad_request(format!("continue token {token:?} is not valid"));
    if !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (rev, key) = text.split_once('\n').ok_or_else(bad)?;
    let rev: i64 = rev.parse().map_err(|_| bad())?;
    if rev <= 0 || key.is_empty() {
        return Err(bad());
    }
    Ok((rev, key.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let t = encode(42, "/registry/pods/default/web-\0");
        assert_eq!(
            decode(&t).unwrap(),
            (42, "/registry/pods/default/web-\0".to_string())
        );
        for bad in [
            "",
            "zz",
            "abc",
            &hex(b"x\n/k"),
            &hex(b"0\n/k"),
            &hex(b"5\n"),
        ] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }
}

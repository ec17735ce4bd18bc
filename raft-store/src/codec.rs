//! The one on-disk and on-wire encoding of Skiff's own data: a format version byte, then postcard.
//!
//! Log entries, snapshots, state-machine records and peer messages all go through here, so a future
//! format change has one place to branch on the version byte.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Version byte written in front of every encoded value.
pub const FORMAT_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty input, expected a format version byte")]
    Empty,
    #[error("unsupported format version {0} (this build reads version {FORMAT_VERSION})")]
    Version(u8),
    #[error("malformed data: {0}")]
    Malformed(#[from] postcard::Error),
}

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    // Serializing into a Vec cannot fail for our types (no maps with non-string keys limits apply).
    out = postcard::to_extend(value, out).unwrap_or_else(|e| panic!("postcard encode: {e}"));
    out
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&FORMAT_VERSION, rest)) => Ok(postcard::from_bytes(rest)?),
        Some((&v, _)) => Err(CodecError::Version(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let v = (7u64, String::from("x"), vec![1u8, 2]);
        let bytes = encode(&v);
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<(u64, String, Vec<u8>)>(&bytes).unwrap(), v);
        assert!(matches!(decode::<u64>(&[]), Err(CodecError::Empty)));
        assert!(matches!(
            decode::<u64>(&[9, 1]),
            Err(CodecError::Version(9))
        ));
        assert!(matches!(
            decode::<String>(&[FORMAT_VERSION, 5, b'a']),
            Err(CodecError::Malformed(_))
        ));
    }
}

//! Backups: the state-machine contents streamed by Maintenance.Snapshot (what `etcdctl snapshot
//! save` writes to a file). Layout: the body's length (8 bytes, little-endian), the body, zero
//! padding to a multiple of 512 bytes, then a SHA-256 of everything before it, as etcd appends
//! one (etcdctl checks both the padding and the checksum). `skiff-server --restore-from FILE`
//! starts a new cluster from such a file.

use sha2::{Digest, Sha256};

const TRAILER: usize = 32;
const LEN: usize = 8;
const PAGE: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup is {0} bytes, too short to hold its checksum")]
    TooShort(usize),
    #[error("backup checksum mismatch: the file is damaged or is not a Skiff backup")]
    Checksum,
    #[error("backup says its body has {0} bytes, more than the file holds")]
    Length(u64),
}

/// Frames a snapshot body as a backup file.
pub fn seal(body: Vec<u8>) -> Vec<u8> {
    let mut file = Vec::with_capacity(body.len() + LEN + PAGE + TRAILER);
    file.extend_from_slice(&(body.len() as u64).to_le_bytes());
    file.extend_from_slice(&body);
    file.resize(file.len().div_ceil(PAGE) * PAGE, 0);
    let sum = Sha256::digest(&file);
    file.extend_from_slice(&sum);
    file
}

/// Verifies the checksum and returns the snapshot body.
pub fn open(file: &[u8]) -> Result<&[u8], BackupError> {
    if file.len() < TRAILER {
        return Err(BackupError::TooShort(file.len()));
    }
    let (framed, sum) = file.split_at(file.len() - TRAILER);
    if Sha256::digest(framed).as_slice() != sum {
        return Err(BackupError::Checksum);
    }
    let (len, rest) = framed.split_at(LEN.min(framed.len()));
    let len = u64::from_le_bytes(
        len.try_into()
            .map_err(|_| BackupError::TooShort(file.len()))?,
    );
    rest.get(..len as usize).ok_or(BackupError::Length(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_backups_open_and_damage_is_detected() {
        let sealed = seal(b"state".to_vec());
        assert_eq!(
            (sealed.len() - TRAILER) % PAGE,
            0,
            "etcdctl expects whole pages"
        );
        assert_eq!(open(&sealed).unwrap(), b"state");
        let mut damaged = sealed.clone();
        damaged[0] ^= 1;
        assert!(matches!(open(&damaged), Err(BackupError::Checksum)));
        assert!(matches!(open(b"x"), Err(BackupError::TooShort(1))));
    }
}

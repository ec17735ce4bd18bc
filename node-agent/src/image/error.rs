//! `ImageError`: what the image service reports, worded for a kubectl user, with the kubelet
//! reason each maps to in a container's `waiting` state.

use std::path::PathBuf;

use super::import::ImportError;
use super::pull::PullError;
use super::reference::ReferenceError;

/// Why an image could not be made available.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference does not parse.
    #[error(transparent)]
    InvalidName(#[from] ReferenceError),
    /// The image is absent and the policy forbids pulling it.
    #[error("Container image {reference:?} is not present with pull policy of Never")]
    NeverPull {
        /// The reference as given.
        reference: String,
    },
    /// Pulling failed.
    #[error("failed to pull image {reference:?}: {source}")]
    Pull {
        /// The reference as given.
        reference: String,
        /// Why.
        #[source]
        source: PullError,
    },
    /// An image tarball could not be imported.
    #[error("importing images: {0}")]
    Import(#[from] ImportError),
    /// The node's image store cannot be used.
    #[error("image store {}: {source}", path.display())]
    Store {
        /// The store's root or the file involved.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    /// The kubelet's reason for this failure: `InvalidImageName`, `ErrImageNeverPull` or
    /// `ErrImagePull` (the agent turns repeated pull failures into `ImagePullBackOff` itself).
    pub fn reason(&self) -> &'static str {
        match self {
            ImageError::InvalidName(_) => "InvalidImageName",
            ImageError::NeverPull { .. } => "ErrImageNeverPull",
            ImageError::Pull { .. } | ImageError::Store { .. } | ImageError::Import(_) => {
                "ErrImagePull"
            }
        }
    }

    /// Whether the caller's input is at fault (an invalid name, a bad archive), not the node.
    pub fn is_bad_input(&self) -> bool {
        match self {
            ImageError::InvalidName(_) => true,
            ImageError::Import(e) => e.is_bad_input(),
            ImageError::NeverPull { .. } | ImageError::Pull { .. } | ImageError::Store { .. } => {
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::reference::ImageRef;

    #[test]
    fn reasons_and_messages() {
        let invalid = ImageError::from(ImageRef::parse("Bad").expect_err("invalid"));
        let cases: Vec<(ImageError, &str, &str)> = vec![
            (
                invalid,
                "InvalidImageName",
                "invalid image name \"Bad\": repository name \"Bad\" must be lowercase",
            ),
            (
                ImageError::NeverPull {
                    reference: "busybox".into(),
                },
                "ErrImageNeverPull",
                "Container image \"busybox\" is not present with pull policy of Never",
            ),
            (
                ImageError::Pull {
                    reference: "x".into(),
                    source: PullError::NotFound {
                        what: "library/x:latest".into(),
                        endpoint: "http://127.0.0.1:5000".into(),
                    },
                },
                "ErrImagePull",
                "failed to pull image \"x\": library/x:latest not found at http://127.0.0.1:5000",
            ),
        ];
        for (error, reason, message) in cases {
            assert_eq!(error.reason(), reason);
            assert_eq!(error.to_string(), message);
        }
    }
}

//! Images: references as Kubernetes users write them, registry configuration, pulls from OCI
//! distribution registries into a content-addressed layer store, and layers unpacked for
//! overlay mounts.
//!
//! The agent opens one [`ImageService`] on `<root-dir>/images` with the `--registry-config`
//! file's [`RegistryConfig`] and calls [`ImageService::ensure`] for each container's image under
//! its [`PullPolicy`], with the pod's pull secrets as [`DockerConfigJson`]; the [`Image`] it gets
//! back carries the config (entrypoint, command, env, working dir, user) and the unpacked layer
//! directories for the container's overlay. Failures are [`ImageError`]s whose `reason()` is the
//! kubelet's waiting reason. [`ImageService::import`] adds the images of a `docker save` or OCI
//! layout tarball to the store, as a pull would have. [`ImageService::collect_garbage`] removes
//! unused images when the disk fills up, under a [`GcPolicy`].

pub mod error;
pub mod gc;
pub mod import;
pub mod pull;
pub mod reference;
pub mod registries;
pub mod service;
pub mod store;
pub mod unpack;

pub use error::ImageError;
pub use gc::{GcPolicy, GcReport};
pub use import::ImportError;
pub use reference::{ImageRef, ReferenceError};
pub use registries::{Credentials, DockerConfigJson, RegistriesError, RegistryConfig};
pub use service::{Image, ImageService, PullPolicy, PullReport};
pub use store::{ImageRecord, LayerRecord};

//! Object storage backends: [`local`] (a directory) and, with feature `gcs`, [`gcs`]
//! (Cloud Storage). Both accept the same names, so a plugin behaves the same on either.

#[cfg(feature = "gcs")]
pub mod gcs;
mod host;
pub mod local;
mod name;
mod settings;

pub use host::BlobstoreCapability;
pub use settings::Settings;

//! Why the runtime could not start ([`RuntimeError`]) or refused a plugin at load
//! ([`LoadError`]).

use std::path::PathBuf;

use ledgerhost_manifest as manifest;

use crate::plugin::CallError;

/// The runtime could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the WebAssembly runtime: {0}")]
pub struct RuntimeError(pub(crate) String);

/// A plugin was refused at load. The message says what and what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The plugin's manifest is missing or invalid.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    /// The component file could not be read.
    #[error("cannot read component {path}: {source}")]
    Read {
        /// Path of the component file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a WebAssembly component at all (our own checks of its header).
    #[error("{path} is not a valid WebAssembly component: {message}")]
    Invalid {
        /// Path of the component file.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// wasmtime could not compile the component.
    #[error("{path} is not a valid WebAssembly component: {source}")]
    Compile {
        /// Path of the component file.
        path: PathBuf,
        /// wasmtime's error, with its chain.
        source: BoxError,
    },
    /// The linker could not satisfy the component's imports.
    #[error("{path}: {source}")]
    Link {
        /// Path of the component file.
        path: PathBuf,
        /// wasmtime's error, with its chain.
        source: BoxError,
    },
    /// The component imports something the host does not provide or did not grant.
    #[error("{path}: {message}")]
    Imports {
        /// Path of the component file.
        path: PathBuf,
        /// Which imports are wrong.
        message: String,
    },
    /// The component does not implement the world its manifest declares.
    #[error(
        "{path} does not implement world `{world}` of ledgerhost:plugin@0.2.0 (or 0.1.0): {source}"
    )]
    World {
        /// Path of the component file.
        path: PathBuf,
        /// The world named in the manifest.
        world: String,
        /// What is missing or mismatched (wasmtime's error, with its chain).
        source: BoxError,
    },
    /// The component failed to instantiate.
    #[error("{path}: instantiation failed: {source}")]
    Instantiate {
        /// Path of the component file.
        path: PathBuf,
        /// Why the first instance could not be built.
        source: CallError,
    },
}

/// An error from wasmtime kept as the source of a [`LoadError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

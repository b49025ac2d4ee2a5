//! The Kubernetes face of ghost: the `SchemaMigration` resource and pure helpers around it.
//!
//! - `types`: spec and status, the CRD's attributes (printer columns, CEL rules, defaults).
//! - `engine_files`: where the engine pod finds the Secrets the operator mounts.
//! - `crd`: the CRD as YAML, and the golden-file test for `crds/`.
//! - `controls`: spec fields and `ghost/*` annotations → the engine's `Controls`.
//! - `status`: engine progress + Job state → phase, message and conditions.
//!
//! Nothing here does I/O. The engine never imports this module; this module imports engine
//! types (`Controls`, `Phase`, `Progress`) so both sides share one vocabulary.

pub mod controls;
pub mod crd;
pub mod engine_files;
pub mod status;
pub mod types;

// Needs kube's `cel` feature (client-side evaluation of the CRD's CEL rules).
#[cfg(test)]
mod cel_tests;

pub use controls::{InvalidControl, effective_controls};
pub use crd::crd_yaml;
pub use status::{JobState, StatusInput, compute_status};
pub use types::{
    ControlSource, MigrationPhase, ProgressStatus, SchemaMigration, SchemaMigrationSpec,
    SchemaMigrationStatus, ValueSource,
};

//! The migration engine. It knows nothing of Kubernetes or sockets: controls come in and progress
//! goes out through plain channels (DESIGN §1).

pub mod alter;
pub mod applier;
pub mod changelog;
pub mod checkpoint;
pub mod checksum;
pub mod chunk_ledger;
pub mod chunk_size;
pub mod cleanup;
pub mod config;
pub mod conn;
pub mod controls;
pub mod copier;
pub mod crash_point;
pub mod cutover;
pub mod ddl;
pub mod dialect;
pub mod error;
pub mod gone_keys;
pub mod hooks;
pub mod inspector;
pub mod json_value;
pub mod migration;
pub mod names;
pub mod position;
pub mod progress;
pub mod schema;
pub mod streamer;
pub mod throttle;
pub mod tls;
pub mod values;
pub mod wording;

pub use error::{EngineError, Result};

//! The migration engine. It knows nothing of Kubernetes or sockets: controls come in and progress
//! goes out through plain channels (DESIGN §1).

pub mod applier;
pub mod conn;
pub mod dialect;
pub mod error;
pub mod position;
pub mod schema;
pub mod streamer;
pub mod values;

pub use error::{EngineError, Result};

pub mod engine;
pub mod sql;

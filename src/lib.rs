pub mod api;
pub mod cli;
pub mod engine;
pub mod engine_pod;
pub mod kubectl;
pub mod operator;
pub mod server;
pub mod sql;

pub mod api;
pub mod cli;
pub mod engine;
pub mod server;
pub mod sql;

//! Command-line front ends. `ghost migrate` takes gh-ost's own flags, so it has a hand-written
//! parser with Go `flag` syntax instead of clap (see `flags`).

pub mod ctl;
pub mod engine;
pub mod flags;
pub mod migrate;
pub mod operator;

//! The Prometheus HTTP API client.
//!
//! Owns: the reqwest client with authentication (bearer token file re-read when it
//! changes, basic auth), TLS (CA, client certificate), extra headers and timeout;
//! retries with jittered exponential backoff on connection errors, timeouts, 429 and
//! 5xx; a cap on the response size; decoding of `query_range` / `query` results,
//! including the `"NaN"`, `"+Inf"` and `"-Inf"` values and Prometheus `warnings`.
//! Every failure is an [`Error`] with a bounded [`Error::cause`] label.
//!
//! It does not decide *what* to query (the cycle does) and never logs credentials.

mod client;
mod error;
#[cfg(test)]
mod fuzz_tests;
mod response;

pub use client::Client;
pub use error::Error;
pub use response::{QueryResult, Series};

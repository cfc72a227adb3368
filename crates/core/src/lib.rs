//! Core of cachier for Rust (work in progress: front end and conformance suite follow).

pub mod codec;
mod contract;
mod error;
mod key;

pub use codec::{Bincode, Codec, DefaultCodec};
pub use contract::{Capabilities, Claim, ClaimToken, Core, Entry, Timestamp};
pub use error::{Error, ErrorKind, Result};
pub use key::{ArgHash, FuncId, Key, Namespace, KEY_FORMAT_VERSION};
pub use async_trait::async_trait;
pub use bytes::Bytes;

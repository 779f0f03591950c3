//! The three stages. Each is a plain struct with functions over batches; the
//! pipeline runs them on three threads, single-threaded mode in one loop.

pub mod crypto;
pub mod rx;
pub mod tx;

pub use crypto::{CryptoStage, EventSink};
pub use rx::RxStage;
pub use tx::TxStage;

//! The three stages. Each is a plain struct with functions over batches; the
//! pipeline runs them on three threads, single-threaded mode in one loop.

/// The two sinks every stage queue trait has: an rtrb producer (the ring to another thread;
/// false when it is full) and a `Vec` (single-threaded mode and tests; never full).
macro_rules! ring_and_vec_sinks {
    ($trait:ident, $method:ident, $item:ty) => {
        impl $trait for rtrb::Producer<$item> {
            fn $method(&mut self, item: $item) -> bool {
                self.push(item).is_ok()
            }
        }

        impl $trait for Vec<$item> {
            fn $method(&mut self, item: $item) -> bool {
                self.push(item);
                true
            }
        }
    };
}
use ring_and_vec_sinks;

pub mod crypto;
pub mod rx;
pub mod tx;

pub use crypto::{CryptoStage, EventSink};
pub use rx::RxStage;
pub use tx::TxStage;

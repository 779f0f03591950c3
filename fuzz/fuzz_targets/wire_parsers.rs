//! Every dataplane wire view, the control-frame parser and `message_type` on arbitrary bytes:
//! they may refuse, never panic, and everything that parses must be fully readable.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The same checks as the proptests in control/tests/parsers_prop.rs.
#[path = "../../control/tests/common/wire_views.rs"]
mod wire_views;

fuzz_target!(|data: &[u8]| wire_views::parse_everything(data));

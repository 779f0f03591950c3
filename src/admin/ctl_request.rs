//! The daemon's side of the control-socket protocol ([`super::ctl`]): reading and recognising the
//! one request line. Depends on `std` only, so the fuzz target `ctl_request` includes it as is.

use std::io::{self, BufRead, BufReader, Read};

/// Longest request line read.
pub const MAX_LINE: u64 = 256;

/// What the answer to an unknown request says.
pub const UNKNOWN: &str =
    "unknown request: expected 'show text', 'show json', 'health text', 'health json' or 'down'\n";

/// A request the daemon knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `show text` / `show json`.
    Show {
        /// JSON rather than text.
        json: bool,
    },
    /// `health text` / `health json`.
    Health {
        /// JSON rather than text.
        json: bool,
    },
    /// `down`: stop the daemon (the SIGTERM path: drain, hooks, interface removed).
    Down,
    /// `test-stall` (debug builds; see `crate::test_hooks`).
    #[cfg(debug_assertions)]
    TestStall,
}

/// Recognise a request line (its line ending and trailing spaces aside).
pub fn parse_request(line: &str) -> Option<Request> {
    match line.trim_end() {
        "show text" => Some(Request::Show { json: false }),
        "show json" => Some(Request::Show { json: true }),
        "health text" => Some(Request::Health { json: false }),
        "health json" => Some(Request::Health { json: true }),
        "down" => Some(Request::Down),
        #[cfg(debug_assertions)]
        "test-stall" => Some(Request::TestStall),
        _ => None,
    }
}

/// Read the request line from `stream`, at most [`MAX_LINE`] bytes: `Err` when it cannot be read
/// (not UTF-8, a read error; the daemon then answers nothing), `Ok(None)` for a line that is no
/// request (answered with exit 2 and [`UNKNOWN`]).
pub fn read_request(stream: impl Read) -> io::Result<Option<Request>> {
    let mut reader = BufReader::new(stream.take(MAX_LINE));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    Ok(parse_request(&line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_refusals() {
        assert_eq!(
            read_request(&b"show json\n"[..]).unwrap(),
            Some(Request::Show { json: true })
        );
        assert_eq!(
            read_request(&b"health text"[..]).unwrap(),
            Some(Request::Health { json: false })
        );
        assert_eq!(read_request(&b"show\n"[..]).unwrap(), None);
        assert_eq!(read_request(&b""[..]).unwrap(), None);
        assert!(read_request(&b"\xff\xfe\n"[..]).is_err());
        // A line past the limit is cut there, so it is no request.
        let long = format!("show json{}\n", " ".repeat(MAX_LINE as usize));
        assert_eq!(
            read_request(long.as_bytes()).unwrap(),
            Some(Request::Show { json: true })
        );
        let longer = format!("{}show json\n", " ".repeat(MAX_LINE as usize));
        assert_eq!(read_request(longer.as_bytes()).unwrap(), None);
    }
}

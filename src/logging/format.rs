//! Step 4: one record as a line of text or one JSON object.

use std::fmt::Write as _;
use std::time::SystemTime;

use log::kv::{Key, Value, VisitSource};
use log::Level;

use crate::config::LogFormat;
use crate::text::{push_json_string, rfc3339};

/// The peer named by the `peer <short id>: ` convention at the start of a message.
pub(super) fn peer_from_message(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("peer ")?;
    let (id, _) = rest.split_once(':')?;
    let plausible = (1..=44).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    plausible.then_some(id)
}

/// A record's fields, ready to print.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Fields {
    pub(super) peer: Option<String>,
    pub(super) class: Option<String>,
    /// Other key-values, in order.
    pub(super) extra: Vec<(String, String)>,
}

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let v = value.to_string();
        match key.as_str() {
            "peer" => self.peer = Some(v),
            "class" => self.class = Some(v),
            k => self.extra.push((k.to_string(), v)),
        }
        Ok(())
    }
}

/// One line, without the newline.
pub(super) fn format_line(
    format: LogFormat,
    time: SystemTime,
    level: Level,
    component: &str,
    message: &str,
    fields: &Fields,
) -> String {
    let peer = fields
        .peer
        .as_deref()
        .or_else(|| peer_from_message(message));
    let mut out = String::with_capacity(96 + message.len());
    match format {
        LogFormat::Text => {
            let _ = write!(
                out,
                "{} {:<5} {component}: {message}",
                rfc3339(time),
                level.as_str()
            );
            // The convention already shows the peer in the message.
            if let Some(p) = fields.peer.as_deref() {
                let _ = write!(out, " peer={p}");
            }
            if let Some(c) = fields.class.as_deref() {
                let _ = write!(out, " class={c}");
            }
            for (k, v) in &fields.extra {
                let _ = write!(out, " {k}={v}");
            }
        }
        LogFormat::Json => {
            out.push_str("{\"time\":");
            push_json_string(&mut out, &rfc3339(time));
            out.push_str(",\"level\":");
            push_json_string(&mut out, level.as_str());
            out.push_str(",\"component\":");
            push_json_string(&mut out, component);
            if let Some(p) = peer {
                out.push_str(",\"peer\":");
                push_json_string(&mut out, p);
            }
            if let Some(c) = fields.class.as_deref() {
                out.push_str(",\"class\":");
                push_json_string(&mut out, c);
            }
            for (k, v) in &fields.extra {
                if matches!(k.as_str(), "time" | "level" | "component" | "message") {
                    continue;
                }
                out.push(',');
                push_json_string(&mut out, k);
                out.push(':');
                push_json_string(&mut out, v);
            }
            out.push_str(",\"message\":");
            push_json_string(&mut out, message);
            out.push('}');
        }
    }
    out
}

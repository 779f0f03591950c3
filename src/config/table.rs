//! The table of sections: one row per `[Section]` veil knows, in the order messages list them.
//!
//! Adding a section: write its file (a draft with `Default` and `impl Section`: its keys and
//! how it lands in the [`Parts`] of the config), add its row to [`SECTIONS`], and the field
//! it fills to `Config`. Nothing else names sections: the parser opens, fills and finishes
//! them through these rows, and messages ("veil knows ...", "it belongs in ...") read them.

use std::any::Any;

use super::error::KeyHint;
use super::interface::InterfaceDraft;
use super::logging::LoggingDraft;
use super::metrics::MetricsDraft;
use super::parser::{Parts, Sink};
use super::peer::PeerDraft;
use super::protection::{PriorityDraft, RateLimitingDraft};
use super::section::{Section, SectionState};
use super::threading::ThreadingDraft;
use veil_control::degradation::DegradationPolicy;
use veil_control::migration::MigrationPolicy;
use veil_control::session::SessionPolicy;

/// Every section. Finishing runs in this order, so a row may use what earlier rows wrote
/// (`[Peer]` reads our public key, `[rate_limiting]` the peers' own limits).
pub(super) const SECTIONS: &[SectionRow] = &[
    SectionRow::of::<InterfaceDraft>(),
    SectionRow::of::<PeerDraft>(),
    SectionRow::of::<SessionPolicy>(),
    SectionRow::of::<MigrationPolicy>(),
    SectionRow::of::<RateLimitingDraft>(),
    SectionRow::of::<DegradationPolicy>(),
    SectionRow::of::<PriorityDraft>(),
    SectionRow::of::<LoggingDraft>(),
    SectionRow::of::<MetricsDraft>(),
    SectionRow::of::<ThreadingDraft>(),
];

/// One section, its draft type erased so that one table can hold them all. Each function
/// works on that section's slot: a `Vec<SectionState<S>>`, one state per header seen.
pub(super) struct SectionRow {
    /// Canonical name, matched case-insensitively.
    pub(super) name: &'static str,
    /// May appear more than once.
    repeats: bool,
    /// Whether the section has `key` (ignored wg-quick keys included).
    has_key: fn(&str) -> bool,
    new_slot: fn() -> Box<dyn Any>,
    /// Header line of the first state, if any.
    first_header: fn(&dyn Any) -> Option<usize>,
    open: fn(&mut dyn Any, usize),
    apply: fn(&mut dyn Any, &mut Sink<'_>, &str, &str, usize),
    finish: fn(Box<dyn Any>, &mut Sink<'_>, &mut Parts),
}

impl SectionRow {
    const fn of<S: Section>() -> Self {
        Self {
            name: S::NAME,
            repeats: S::REPEATS,
            has_key: has_key::<S>,
            new_slot: new_slot::<S>,
            first_header: first_header::<S>,
            open: open::<S>,
            apply: apply::<S>,
            finish: finish::<S>,
        }
    }
}

type Slot<S> = Vec<SectionState<S>>;

fn has_key<S: Section>(key: &str) -> bool {
    S::KEYS.iter().any(|k| k.name.eq_ignore_ascii_case(key))
        || S::IGNORED.iter().any(|k| k.eq_ignore_ascii_case(key))
}

fn new_slot<S: Section>() -> Box<dyn Any> {
    Box::new(Slot::<S>::new())
}

// A slot is made by `new_slot::<S>` of the same row, so the downcasts below always succeed;
// were one to fail, the section would read as absent rather than panic.

fn first_header<S: Section>(slot: &dyn Any) -> Option<usize> {
    let states = slot.downcast_ref::<Slot<S>>()?;
    states.first().map(|s| s.header_line)
}

fn open<S: Section>(slot: &mut dyn Any, line: usize) {
    if let Some(states) = slot.downcast_mut::<Slot<S>>() {
        states.push(SectionState::new(line));
    }
}

fn apply<S: Section>(slot: &mut dyn Any, sink: &mut Sink<'_>, key: &str, value: &str, line: usize) {
    if let Some(state) = slot.downcast_mut::<Slot<S>>().and_then(|s| s.last_mut()) {
        sink.apply(state, key, value, line);
    }
}

fn finish<S: Section>(slot: Box<dyn Any>, sink: &mut Sink<'_>, out: &mut Parts) {
    let states = slot.downcast::<Slot<S>>().map(|s| *s).unwrap_or_default();
    S::finish(states, sink, out);
}

/// Which section the following `Key = Value` lines belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Open {
    /// Before the first header.
    Nothing,
    /// The row of [`SECTIONS`] at this index.
    Section(usize),
    /// An unknown or repeated section, already reported: its keys are ignored.
    Skipped,
}

/// Why a `[name]` header opened nothing.
pub(super) enum NotOpened {
    /// No section has this name.
    Unknown,
    /// A section that may appear once, already opened on `first_line`.
    Repeated {
        section: &'static str,
        first_line: usize,
    },
}

/// What the file set so far: one slot per row of [`SECTIONS`], in the same order.
pub(super) struct Drafts {
    slots: Vec<Box<dyn Any>>,
}

impl Drafts {
    pub(super) fn new() -> Self {
        Self {
            slots: SECTIONS.iter().map(|row| (row.new_slot)()).collect(),
        }
    }

    /// Opens the section named `name` (case-insensitive) at `line`.
    pub(super) fn open(&mut self, name: &str, line: usize) -> Result<Open, NotOpened> {
        let (index, (row, slot)) = SECTIONS
            .iter()
            .zip(self.slots.iter_mut())
            .enumerate()
            .find(|(_, (row, _))| row.name.eq_ignore_ascii_case(name))
            .ok_or(NotOpened::Unknown)?;
        if !row.repeats {
            if let Some(first_line) = (row.first_header)(slot.as_ref()) {
                return Err(NotOpened::Repeated {
                    section: row.name,
                    first_line,
                });
            }
        }
        (row.open)(slot.as_mut(), line);
        Ok(Open::Section(index))
    }

    /// `key = value` in the latest section of row `index`.
    pub(super) fn apply(
        &mut self,
        index: usize,
        sink: &mut Sink<'_>,
        key: &str,
        value: &str,
        line: usize,
    ) {
        if let (Some(row), Some(slot)) = (SECTIONS.get(index), self.slots.get_mut(index)) {
            (row.apply)(slot.as_mut(), sink, key, value, line);
        }
    }

    /// Finishes every section, in table order, into `out`.
    pub(super) fn finish(self, sink: &mut Sink<'_>, out: &mut Parts) {
        for (row, slot) in SECTIONS.iter().zip(self.slots) {
            (row.finish)(slot, sink, out);
        }
    }
}

/// "[Interface], [Peer], [logging], …" for messages.
pub(super) fn known_sections() -> String {
    let names: Vec<String> = SECTIONS.iter().map(|r| format!("[{}]", r.name)).collect();
    names.join(", ")
}

/// The first section that has `key`, for "it belongs in [...]" hints.
pub(super) fn section_with(key: &str) -> Option<&'static str> {
    SECTIONS
        .iter()
        .find(|row| (row.has_key)(key))
        .map(|row| row.name)
}

/// Lower-case and drop separators, so `allowed_ips`, `Allowed-IPs` and `AllowedIPs` compare equal.
fn fold_key(key: &str) -> Vec<u8> {
    key.bytes()
        .filter(|b| !matches!(b, b'_' | b'-' | b' '))
        .map(|b| b.to_ascii_lowercase())
        .collect()
}

/// Edit distance, for "did you mean". Inputs are short (names of at most 32 bytes).
fn edit_distance(a: &[u8], b: &[u8]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        cur.fill(0);
        if let Some(first) = cur.first_mut() {
            *first = i + 1;
        }
        for (j, &cb) in b.iter().enumerate() {
            let substitute = prev.get(j).copied().unwrap_or(0) + usize::from(ca != cb);
            let delete = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let insert = cur.get(j).copied().unwrap_or(0) + 1;
            if let Some(slot) = cur.get_mut(j + 1) {
                *slot = substitute.min(delete).min(insert);
            }
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev.last().copied().unwrap_or(0)
}

pub(super) fn key_hint<S: Section>(key: &str) -> Option<KeyHint> {
    if let Some(other) = section_with(key) {
        return Some(KeyHint::BelongsIn(other));
    }
    let folded = fold_key(key);
    S::KEYS
        .iter()
        .map(|k| (k.name, edit_distance(&folded, &fold_key(k.name))))
        .filter(|&(_, d)| d <= 2)
        .min_by_key(|&(_, d)| d)
        .map(|(name, _)| KeyHint::DidYouMean(name))
}

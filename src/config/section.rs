//! A section is a draft that collects values and a table of its keys (`KeySpec`: name, how
//! often it may appear, how its value parses, what to say when that fails). The parser in
//! `parser.rs` applies `Key = Value` lines through these tables; `table.rs` lists the sections.

use super::endpoint::Resolve;
use super::error::{ConfigWarning, ValueProblem, WarningKind};
use super::parser::{Parts, Sink};

/// What a setter sees besides the value: where it is, and where warnings go.
pub(super) struct ValueCtx<'a> {
    pub(super) file: &'a str,
    pub(super) line: usize,
    pub(super) warnings: &'a mut Vec<ConfigWarning>,
    pub(super) resolver: &'a dyn Resolve,
}

impl ValueCtx<'_> {
    pub(super) fn warn(&mut self, kind: WarningKind) {
        self.warnings.push(ConfigWarning {
            file: self.file.to_string(),
            line: Some(self.line),
            kind,
        });
    }
}

pub(super) type Setter<D> = fn(&mut D, &str, &mut ValueCtx<'_>) -> Result<(), ValueProblem>;

/// How often a key may appear in one section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arity {
    /// At most once.
    Once,
    /// Any number of times, each a comma-separated list; the setter sees one item at a time.
    List,
}

/// One key of a section: its name, how to parse it, and what to say when that fails.
pub(super) struct KeySpec<D> {
    pub(super) name: &'static str,
    pub(super) arity: Arity,
    pub(super) required: bool,
    /// Never echo the value.
    pub(super) secret: bool,
    /// "is not a valid {what}".
    pub(super) what: &'static str,
    /// "(expected {expected})".
    pub(super) expected: &'static str,
    pub(super) set: Setter<D>,
}

impl<D> KeySpec<D> {
    pub(super) const fn once(
        name: &'static str,
        what: &'static str,
        expected: &'static str,
        set: Setter<D>,
    ) -> Self {
        Self {
            name,
            arity: Arity::Once,
            required: false,
            secret: false,
            what,
            expected,
            set,
        }
    }

    /// Any number of times, each a comma-separated list; the setter sees one item at a time.
    pub(super) const fn list(self) -> Self {
        Self {
            arity: Arity::List,
            ..self
        }
    }

    pub(super) const fn required(self) -> Self {
        Self {
            required: true,
            ..self
        }
    }

    pub(super) const fn secret(self) -> Self {
        Self {
            secret: true,
            ..self
        }
    }
}

/// A kind of `[Section]`: a draft that collects values, and the table of its keys.
pub(super) trait Section: Default + Sized + 'static {
    /// Canonical name, matched case-insensitively.
    const NAME: &'static str;
    /// Its keys.
    const KEYS: &'static [KeySpec<Self>];
    /// wg-quick keys accepted with a warning because veil does not act on them.
    const IGNORED: &'static [&'static str] = &[];
    /// Whether the section may appear more than once (`[Peer]`); others may appear once.
    const REPEATS: bool = false;

    /// Checks across keys and writes the result into the config being built. Called for
    /// every section, with no states when the file has none of it (defaults then apply).
    fn finish(states: Vec<SectionState<Self>>, sink: &mut Sink<'_>, out: &mut Parts);
}

/// A section being filled in: its draft, where it started, and which keys were seen where.
pub(super) struct SectionState<D> {
    pub(super) draft: D,
    pub(super) header_line: usize,
    pub(super) seen: Vec<(&'static str, usize)>,
}

impl<D: Section> SectionState<D> {
    pub(super) fn new(header_line: usize) -> Self {
        Self {
            draft: D::default(),
            header_line,
            seen: Vec::new(),
        }
    }

    /// First line where `key` was set.
    pub(super) fn line_of(&self, key: &str) -> Option<usize> {
        self.seen
            .iter()
            .find(|(name, _)| *name == key)
            .map(|&(_, line)| line)
    }
}

/// The state of a section that may appear once: the parser skips a second header.
pub(super) fn only<S>(states: Vec<SectionState<S>>) -> Option<SectionState<S>> {
    states.into_iter().next()
}

/// The draft of a section that may appear once, or its defaults when the file has none.
pub(super) fn only_draft<S: Default>(states: Vec<SectionState<S>>) -> S {
    only(states).map(|s| s.draft).unwrap_or_default()
}

/// Stores a parsed value: the usual setter, `|d, v, _| set(&mut d.field, parse(v))`.
pub(super) fn set<T, E: Into<ValueProblem>>(
    slot: &mut T,
    parsed: Result<T, E>,
) -> Result<(), ValueProblem> {
    *slot = parsed.map_err(Into::into)?;
    Ok(())
}

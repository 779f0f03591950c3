//! A section is a draft that collects values and a table of its keys (`KeySpec`: name, how
//! often it may appear, how its value parses, what to say when that fails). The parser in
//! `parser.rs` applies `Key = Value` lines through these tables; `table.rs` lists the sections.

use super::endpoint::Resolve;
use super::error::{
    echo_name, echo_value, ConfigError, ConfigErrorKind, ConfigWarning, Echo, KeyHint,
    ValueProblem, WarningKind,
};
use super::output::Parts;

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
    /// Any number of times, each value whole (commas included): `PostUp` command lines.
    Lines,
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

    pub(super) const fn lines(self) -> Self {
        Self {
            arity: Arity::Lines,
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

/// Where errors and warnings go, kept apart from the sections so both can be borrowed at once.
pub(super) struct Sink<'a> {
    pub(super) file: &'a str,
    pub(super) resolver: &'a dyn Resolve,
    pub(super) errors: Vec<ConfigError>,
    pub(super) warnings: Vec<ConfigWarning>,
    /// The section that has a key, for "it belongs in [...]" (the table's `section_with`).
    pub(super) home_of: fn(&str) -> Option<&'static str>,
}

impl Sink<'_> {
    pub(super) fn error(&mut self, line: Option<usize>, kind: ConfigErrorKind) {
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            line,
            kind,
        });
    }

    /// Applies `key = value` (already trimmed) to a section.
    pub(super) fn apply<S: Section>(
        &mut self,
        state: &mut SectionState<S>,
        key: &str,
        value: &str,
        line: usize,
    ) {
        let Some(spec) = S::KEYS.iter().find(|k| k.name.eq_ignore_ascii_case(key)) else {
            if let Some(&ignored) = S::IGNORED.iter().find(|k| k.eq_ignore_ascii_case(key)) {
                self.warnings.push(ConfigWarning {
                    file: self.file.to_string(),
                    line: Some(line),
                    kind: WarningKind::IgnoredKey { key: ignored },
                });
                return;
            }
            let echoed = echo_name(key);
            let hint = match echoed {
                Echo::Text(_) => key_hint::<S>(key, self.home_of),
                Echo::Redacted => None,
            };
            self.error(
                Some(line),
                ConfigErrorKind::UnknownKey {
                    section: S::NAME,
                    key: echoed,
                    hint,
                    known: S::KEYS.iter().map(|k| k.name).collect(),
                },
            );
            return;
        };
        match (spec.arity, state.line_of(spec.name)) {
            (Arity::Once, Some(first_line)) => {
                self.error(
                    Some(line),
                    ConfigErrorKind::DuplicateKey {
                        key: spec.name,
                        first_line,
                    },
                );
                return;
            }
            (_, None) => state.seen.push((spec.name, line)),
            (Arity::List | Arity::Lines, Some(_)) => {}
        }
        let items: Vec<&str> = match spec.arity {
            Arity::Once | Arity::Lines => vec![value],
            Arity::List => value.split(',').map(str::trim).collect(),
        };
        for item in items {
            let result = if item.is_empty() {
                Err(ValueProblem::Empty)
            } else {
                let mut ctx = ValueCtx {
                    file: self.file,
                    line,
                    warnings: &mut self.warnings,
                    resolver: self.resolver,
                };
                (spec.set)(&mut state.draft, item, &mut ctx)
            };
            if let Err(problem) = result {
                self.error(
                    Some(line),
                    ConfigErrorKind::InvalidValue {
                        key: spec.name,
                        value: if spec.secret {
                            Echo::Redacted
                        } else {
                            echo_value(item)
                        },
                        what: spec.what,
                        problem,
                        expected: spec.expected,
                    },
                );
            }
        }
    }

    /// Reports required keys that never appeared. Returns whether all were there.
    pub(super) fn check_required<S: Section>(&mut self, state: &SectionState<S>) -> bool {
        let mut complete = true;
        for spec in S::KEYS.iter().filter(|k| k.required) {
            if state.line_of(spec.name).is_none() {
                complete = false;
                self.error(
                    Some(state.header_line),
                    ConfigErrorKind::MissingKey {
                        section: S::NAME,
                        key: spec.name,
                        expected: spec.expected,
                    },
                );
            }
        }
        complete
    }
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

fn key_hint<S: Section>(key: &str, home_of: fn(&str) -> Option<&'static str>) -> Option<KeyHint> {
    if let Some(other) = home_of(key) {
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

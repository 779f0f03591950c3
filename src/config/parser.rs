//! The parser: reads lines, opens sections through the table, applies `Key = Value` through
//! each section's keys, and collects every problem of the file in one pass.

use super::endpoint::Resolve;
use super::error::{
    echo_name, echo_value, ConfigError, ConfigErrorKind, ConfigErrors, ConfigWarning, Echo,
    ValueProblem, WarningKind,
};
use super::section::{Arity, Section, SectionState, ValueCtx};
use super::table::{key_hint, Drafts, NotOpened, Open};
use super::{Config, InterfaceConfig, LoggingConfig, MetricsConfig, PeerConfig, ThreadingConfig};
use veil_control::device::ProtectionConfig;
use veil_control::migration::MigrationPolicy;
use veil_control::session::SessionPolicy;

/// The config being built: each section's `finish` writes its part, in table order.
#[derive(Default)]
pub(super) struct Parts {
    /// `None` until `[Interface]` is finished complete.
    pub(super) interface: Option<InterfaceConfig>,
    pub(super) peers: Vec<PeerConfig>,
    pub(super) sessions: SessionPolicy,
    pub(super) migration: MigrationPolicy,
    pub(super) protection: ProtectionConfig,
    pub(super) logging: LoggingConfig,
    pub(super) metrics: MetricsConfig,
    pub(super) threading: ThreadingConfig,
}

/// Where errors and warnings go, kept apart from the sections so both can be borrowed at once.
pub(super) struct Sink<'a> {
    pub(super) file: &'a str,
    resolver: &'a dyn Resolve,
    errors: Vec<ConfigError>,
    pub(super) warnings: Vec<ConfigWarning>,
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
                Echo::Text(_) => key_hint::<S>(key),
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
            (Arity::List, Some(_)) => {}
        }
        let items: Vec<&str> = match spec.arity {
            Arity::Once => vec![value],
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

pub(super) struct Parser<'a> {
    sink: Sink<'a>,
    open: Open,
    drafts: Drafts,
}

impl<'a> Parser<'a> {
    pub(super) fn new(file: &'a str, resolver: &'a dyn Resolve) -> Self {
        Self {
            sink: Sink {
                file,
                resolver,
                errors: Vec::new(),
                warnings: Vec::new(),
            },
            open: Open::Nothing,
            drafts: Drafts::new(),
        }
    }

    pub(super) fn line(&mut self, raw: &str, line: usize) {
        // Like wg-quick: everything from '#' on is a comment. Base64 has no '#', so keys are safe.
        let text = raw.split('#').next().unwrap_or("").trim();
        if text.is_empty() {
            return;
        }
        if let Some(rest) = text.strip_prefix('[') {
            match rest.strip_suffix(']') {
                Some(name) if !name.contains(['[', ']']) => self.header(name.trim(), line),
                _ => {
                    self.sink
                        .error(Some(line), ConfigErrorKind::MalformedSection);
                    self.open = Open::Skipped;
                }
            }
            return;
        }
        // Split at the first '=': base64 values end in '='.
        let Some((key, value)) = text.split_once('=') else {
            self.sink.error(Some(line), ConfigErrorKind::MalformedLine);
            return;
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            self.sink.error(Some(line), ConfigErrorKind::MalformedLine);
            return;
        }
        match self.open {
            Open::Nothing => self.sink.error(
                Some(line),
                ConfigErrorKind::KeyOutsideSection {
                    key: echo_name(key),
                },
            ),
            Open::Skipped => {}
            Open::Section(index) => self.drafts.apply(index, &mut self.sink, key, value, line),
        }
    }

    fn header(&mut self, name: &str, line: usize) {
        self.open = match self.drafts.open(name, line) {
            Ok(open) => open,
            Err(NotOpened::Repeated {
                section,
                first_line,
            }) => {
                self.sink.error(
                    Some(line),
                    ConfigErrorKind::DuplicateSection {
                        section,
                        first_line,
                    },
                );
                Open::Skipped
            }
            Err(NotOpened::Unknown) => {
                self.sink.error(
                    Some(line),
                    ConfigErrorKind::UnknownSection {
                        name: echo_name(name),
                    },
                );
                Open::Skipped
            }
        };
    }

    pub(super) fn finish(self) -> Result<Config, ConfigErrors> {
        let mut sink = self.sink;
        let mut parts = Parts::default();
        self.drafts.finish(&mut sink, &mut parts);
        match parts.interface {
            Some(interface) if sink.errors.is_empty() => Ok(Config {
                interface,
                peers: parts.peers,
                sessions: parts.sessions,
                migration: parts.migration,
                protection: parts.protection,
                logging: parts.logging,
                metrics: parts.metrics,
                threading: parts.threading,
                warnings: sink.warnings,
            }),
            _ => {
                let mut errors = sink.errors;
                // Stable, so errors of one line keep their left-to-right order.
                errors.sort_by_key(|e| e.line);
                Err(ConfigErrors(errors))
            }
        }
    }
}

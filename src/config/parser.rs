//! The parser: reads lines, opens sections through the table, applies `Key = Value` through
//! each section's keys, and collects every problem of the file in one pass.

use super::endpoint::Resolve;
use super::error::{echo_name, ConfigErrorKind, ConfigErrors, Echo};
use super::output::{Config, Parts};
use super::section::Sink;
use super::table::{section_names, section_with, Drafts, NotOpened, Open};

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
                home_of: section_with,
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
            Open::Nothing => {
                let key = echo_name(key);
                let home = match &key {
                    Echo::Text(k) => section_with(k),
                    Echo::Redacted => None,
                };
                self.sink
                    .error(Some(line), ConfigErrorKind::KeyOutsideSection { key, home });
            }
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
                        known: section_names(),
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

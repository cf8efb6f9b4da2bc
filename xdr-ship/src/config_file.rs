//! What the configuration files (`ship --config` destinations, `recv
//! --config`) share: the one [`ConfigError`] their mistakes come back as,
//! and where in a TOML file's text a mistake is (the line, and the key on
//! it, that the operator must fix).
//!
//! Why by hand: `toml` gives a byte span, not a line; these two lookups are
//! the only text work either file needs. Why one error: both files are
//! interfaces of the product and must say a mistake the same way (file,
//! line, key, what is wrong and what the file takes).
use std::{
    ops::Range,
    path::{Path, PathBuf},
};

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: cannot read: {source}", path = path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, or a value of the wrong type.
    #[error(
        "{path}: line {line}{key}: {message} ({accepted})",
        path = path.display(),
        key = key.as_ref().map(|k| format!(", key `{k}`")).unwrap_or_default()
    )]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the mistake.
        line: usize,
        /// The key on that line, when there is one.
        key: Option<String>,
        /// What the parser said.
        message: String,
        /// What the file may hold, as the error says it.
        accepted: &'static str,
    },
    /// A value of the right type that does not parse or is out of range.
    #[error(
        "{path}: line {line}, key `{key}`{of}: {reason}",
        path = path.display(),
        of = table.as_ref().map(|t| format!(" of {t}")).unwrap_or_default()
    )]
    Value {
        /// The file.
        path: PathBuf,
        /// 1-based line of the value.
        line: usize,
        /// The key.
        key: &'static str,
        /// The table the key is in, when the file has several alike (a
        /// destination's address).
        table: Option<String>,
        /// What is wrong with the value.
        reason: String,
    },
}

impl ConfigError {
    /// `path` cannot be read.
    pub(crate) fn read(path: &Path, source: std::io::Error) -> Self {
        Self::Read {
            path: path.to_owned(),
            source,
        }
    }

    /// `text` (the file at `path`) does not deserialize.
    pub(crate) fn syntax(
        text: &str,
        path: &Path,
        accepted: &'static str,
        e: &toml::de::Error,
    ) -> Self {
        let at = e.span().map_or(0, |s| s.start);
        Self::Syntax {
            path: path.to_owned(),
            line: line_of(text, at),
            key: key_on_line(text, at),
            message: e.message().trim_end().to_owned(),
            accepted,
        }
    }

    /// The value of `key` at `span` of `text` is wrong for `reason`.
    pub(crate) fn value(
        text: &str,
        path: &Path,
        (key, span): (&'static str, Range<usize>),
        table: Option<String>,
        reason: String,
    ) -> Self {
        Self::Value {
            path: path.to_owned(),
            line: line_of(text, span.start),
            key,
            table,
            reason,
        }
    }
}

/// The 1-based line holding byte `at` of `text`.
pub(crate) fn line_of(text: &str, at: usize) -> usize {
    text.get(..at).map_or(0, |t| t.matches('\n').count()) + 1
}

/// The key of the `key = value` line holding byte `at`, if it is one.
pub(crate) fn key_on_line(text: &str, at: usize) -> Option<String> {
    let start = text.get(..at)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.starts_with('[')).then(|| key.to_owned())
}

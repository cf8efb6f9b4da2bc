//! Where in a TOML file's text a mistake is, for the errors of the
//! configuration files (`ship --config` destinations, `recv --config`):
//! the line, and the key on it, that the operator must fix.
//!
//! Why by hand: `toml` gives a byte span, not a line; these two lookups are
//! the only text work either file needs, shared by both.

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

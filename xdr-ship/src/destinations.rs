//! The source node's destinations: the `--to` addresses and the
//! `[[destination]]` tables of a TOML file, each turned into the
//! [`ShipConfig`] it ships with.
//!
//! Why in the library: the file is an interface of the product (operators
//! keep it beside XDR's own configuration), so its rules are tested here,
//! and a mistake in it comes back as a typed [`ConfigError`] (inside
//! [`DestinationsError`]) naming the file, the line and the key, not as a
//! parser's dump.
//!
//! Every destination starts from the command line's configuration (the
//! shipping flags) and a table overrides only what it sets:
//!
//! ```toml
//! [[destination]]
//! name = "dc2"                 # checkpoint name; default: from the address
//! address = "10.0.0.2:3000"
//! connections = 16
//! window = "auto"              # or a number of records
//! mode = "unordered"           # or "ordered"
//! max-throughput = 50000       # records/s
//! ```
use std::path::Path;

use serde::Deserialize;

use toml::Spanned;

use crate::{
    config_file::ConfigError,
    ship::{ShipConfig, WindowSetting},
    srclog::destination_name,
    wire::OrderingMode,
};

/// What a `[[destination]]` table may hold, as the errors say it.
pub const ACCEPTED: &str = "[[destination]] tables take address, and optionally name, \
                            connections, window, mode, max-throughput";

/// One place the source node ships to.
#[derive(Clone, Debug)]
pub struct Destination {
    /// Its checkpoint name in the log (unique).
    pub name: String,
    /// How it is shipped to.
    pub config: ShipConfig,
}

/// Why the destinations cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum DestinationsError {
    /// The file cannot be read, is not TOML, or a table has a key or a
    /// value it may not.
    #[error(transparent)]
    File(#[from] ConfigError),
    /// Neither addresses nor a file.
    #[error("no destination: give --to ADDR (repeatable) or --config FILE")]
    Empty,
    /// Two destinations share a checkpoint name.
    #[error("destination `{0}` is given twice (each keeps its own checkpoint)")]
    Twice(String),
}

/// One `[[destination]]` table.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Table {
    address: String,
    name: Option<String>,
    connections: Option<Spanned<usize>>,
    window: Option<Spanned<WindowValue>>,
    mode: Option<OrderingMode>,
    max_throughput: Option<u64>,
}

/// `window = 128` or `window = "auto"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum WindowValue {
    Records(u64),
    Word(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    destination: Vec<Table>,
}

/// The destinations: one per `to` address, then those of the file at
/// `config`, each starting from `base`. Names must be unique.
pub fn resolve(
    base: &ShipConfig,
    to: &[String],
    config: Option<&Path>,
) -> Result<Vec<Destination>, DestinationsError> {
    let mut out: Vec<Destination> = to.iter().map(|addr| from_address(base, addr)).collect();
    if let Some(path) = config {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::read(path, e))?;
        out.extend(parse(base, &text, path)?);
    }
    if out.is_empty() {
        return Err(DestinationsError::Empty);
    }
    for (i, d) in out.iter().enumerate() {
        if out[..i].iter().any(|o| o.name == d.name) {
            return Err(DestinationsError::Twice(d.name.clone()));
        }
    }
    Ok(out)
}

/// The destinations of a TOML file's `text` (`path` labels errors).
pub fn parse(
    base: &ShipConfig,
    text: &str,
    path: &Path,
) -> Result<Vec<Destination>, DestinationsError> {
    let file: File =
        toml::from_str(text).map_err(|e| ConfigError::syntax(text, path, ACCEPTED, &e))?;
    file.destination
        .into_iter()
        .map(|t| t.into_destination(base, text, path))
        .collect()
}

impl Table {
    fn into_destination(
        self,
        base: &ShipConfig,
        text: &str,
        path: &Path,
    ) -> Result<Destination, DestinationsError> {
        let mut d = from_address(base, &self.address);
        let value_error = |key, span, reason| {
            DestinationsError::File(ConfigError::value(
                text,
                path,
                (key, span),
                Some(self.address.clone()),
                reason,
            ))
        };
        if let Some(n) = &self.connections {
            if *n.get_ref() == 0 {
                return Err(value_error(
                    "connections",
                    n.span(),
                    "must be ≥ 1".to_owned(),
                ));
            }
            d.config.connections = *n.get_ref();
        }
        if let Some(w) = &self.window {
            let word = match w.get_ref() {
                WindowValue::Records(n) => n.to_string(),
                WindowValue::Word(s) => s.clone(),
            };
            d.config.window = word
                .parse::<WindowSetting>()
                .map_err(|reason| value_error("window", w.span(), reason))?;
        }
        if let Some(m) = self.mode {
            d.config.mode = m;
        }
        if self.max_throughput.is_some() {
            d.config.max_throughput = self.max_throughput;
        }
        if let Some(name) = self.name {
            d.name = name;
        }
        Ok(d)
    }
}

/// A destination at `addr` shipped as `base` says, named after it.
fn from_address(base: &ShipConfig, addr: &str) -> Destination {
    let mut config = base.clone();
    config.to = addr.to_owned();
    Destination {
        name: destination_name(addr),
        config,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Vec<Destination>, DestinationsError> {
        parse(&ShipConfig::new(""), text, Path::new("dest.toml"))
    }

    #[test]
    fn a_table_overrides_only_what_it_sets() {
        let mut base = ShipConfig::new("");
        base.connections = 8;
        base.max_throughput = Some(7);
        let d = parse(
            &base,
            "[[destination]]\naddress = \"10.0.0.2:3000\"\nmode = \"unordered\"\n",
            Path::new("dest.toml"),
        )
        .unwrap();
        assert_eq!(d[0].name, "10.0.0.2_3000");
        assert_eq!(d[0].config.mode, OrderingMode::Unordered);
        assert_eq!(d[0].config.connections, 8);
        assert_eq!(d[0].config.max_throughput, Some(7));
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let err = parse_str("[[destination]]\naddress = \"x:1\"\nspeed = 3\n").unwrap_err();
        match &err {
            DestinationsError::File(ConfigError::Syntax { line, key, .. }) => {
                assert_eq!((*line, key.as_deref()), (3, Some("speed")));
            }
            e => panic!("not a syntax error: {e}"),
        }
        let text = err.to_string();
        assert!(text.starts_with("dest.toml: line 3, key `speed`"), "{text}");
        assert!(text.contains(ACCEPTED), "{text}");
    }

    #[test]
    fn a_bad_mode_is_named_with_its_line() {
        let err =
            parse_str("[[destination]]\naddress = \"x:1\"\n\nmode = \"sideways\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("line 4, key `mode`"), "{text}");
        assert!(text.contains("sideways"), "{text}");
    }

    #[test]
    fn zero_connections_and_a_zero_window_are_out_of_range() {
        let err = parse_str("[[destination]]\naddress = \"x:1\"\nconnections = 0\n").unwrap_err();
        assert!(
            matches!(
                err,
                DestinationsError::File(ConfigError::Value {
                    line: 3,
                    key: "connections",
                    ..
                })
            ),
            "{err}"
        );
        let err = parse_str("[[destination]]\naddress = \"x:1\"\n\nwindow = 0\n").unwrap_err();
        assert!(
            matches!(
                err,
                DestinationsError::File(ConfigError::Value {
                    line: 4,
                    key: "window",
                    ..
                })
            ),
            "{err}"
        );
    }

    #[test]
    fn a_missing_file_names_it() {
        let path = Path::new("/nonexistent/xdr-ship-destinations.toml");
        let err = resolve(&ShipConfig::new(""), &[], Some(path)).unwrap_err();
        assert!(
            matches!(err, DestinationsError::File(ConfigError::Read { .. })),
            "{err}"
        );
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    }

    #[test]
    fn no_address_and_no_file_is_refused() {
        let err = resolve(&ShipConfig::new(""), &[], None).unwrap_err();
        assert!(matches!(err, DestinationsError::Empty), "{err}");
    }
}

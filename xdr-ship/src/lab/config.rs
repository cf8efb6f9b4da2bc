//! The link's shape and its human-unit flags.
//!
//! Why our own parsers around `humantime` and `byte-unit`: operators think in
//! `156ms`, `100MB/s`, `800Mbit/s` and `0.1%`, and a typo must say which flag
//! was wrong and what it accepts, not "invalid digit".
use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

/// Everything that shapes the emulated link. Both directions get the same shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkConfig {
    /// Round-trip time of the empty link: each direction delays by half.
    pub rtt: Duration,
    /// Line rate, in IP bytes per second (headers included, as a router counts).
    pub bandwidth_bytes_per_s: u64,
    /// Fraction of MSS segments dropped at random in each direction (0.001 = 0.1%).
    pub loss: f64,
    /// When not empty, `loss` strikes only TCP segments whose source or
    /// destination port is listed: one connection's path can be lossy while
    /// the others stay clean (as when one flow crosses a bad link).
    #[serde(default)]
    pub loss_ports: Vec<u16>,
    /// Extra one-way delay, uniform in `±jitter`; packets are never reordered.
    pub jitter: Duration,
    /// MTU of both TUN devices.
    pub mtu: u32,
    /// Tail-drop buffer in front of the line, as time at line rate.
    pub queue: Duration,
}

impl LinkConfig {
    /// A link of `rtt` and `bandwidth_bytes_per_s` with no loss, no jitter,
    /// MTU 1500 and a buffer of one RTT.
    pub fn new(rtt: Duration, bandwidth_bytes_per_s: u64) -> Self {
        Self {
            rtt,
            bandwidth_bytes_per_s,
            loss: 0.0,
            loss_ports: Vec::new(),
            jitter: Duration::ZERO,
            mtu: 1500,
            queue: rtt,
        }
    }

    /// The tail-drop buffer in bytes (`queue` at line rate), never below one
    /// maximal super-packet so that a GSO burst can always enter an empty line.
    pub fn queue_bytes(&self) -> u64 {
        let bytes = (self.bandwidth_bytes_per_s as u128 * self.queue.as_nanos() / 1_000_000_000)
            .min(u64::MAX as u128) as u64;
        bytes.max(u64::from(self.mtu))
    }

    /// Bytes a TCP connection must keep in flight to fill the link with its
    /// buffer full: `rate × (rtt + queue)`.
    pub fn bdp_bytes(&self) -> u64 {
        let t = self.rtt + self.queue + self.jitter * 2;
        (self.bandwidth_bytes_per_s as u128 * t.as_nanos() / 1_000_000_000).min(u64::MAX as u128)
            as u64
    }

    /// Checks ranges that the flag parsers cannot see alone.
    pub fn validate(&self) -> Result<(), UnitError> {
        if self.bandwidth_bytes_per_s < 1000 {
            return Err(UnitError::new(
                "--bandwidth",
                &self.bandwidth_bytes_per_s.to_string(),
                BANDWIDTH_FORM,
            ));
        }
        if !(0.0..1.0).contains(&self.loss) {
            return Err(UnitError::new("--loss", &self.loss.to_string(), LOSS_FORM));
        }
        if !(576..=65535).contains(&self.mtu) {
            return Err(UnitError::new("--mtu", &self.mtu.to_string(), MTU_FORM));
        }
        if self.rtt > Duration::from_secs(10) {
            return Err(UnitError::new(
                "--rtt",
                &humantime::format_duration(self.rtt).to_string(),
                RTT_FORM,
            ));
        }
        if self.jitter * 2 > self.rtt {
            return Err(UnitError::new(
                "--jitter",
                &humantime::format_duration(self.jitter).to_string(),
                JITTER_FORM,
            ));
        }
        if self.queue > Duration::from_secs(10) {
            return Err(UnitError::new(
                "--queue",
                &humantime::format_duration(self.queue).to_string(),
                QUEUE_FORM,
            ));
        }
        Ok(())
    }
}

impl fmt::Display for LinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rtt {} · {} · loss {}%{} · jitter ±{} · mtu {} · queue {}",
            humantime::format_duration(self.rtt),
            format_rate(self.bandwidth_bytes_per_s as f64),
            self.loss * 100.0,
            if self.loss_ports.is_empty() {
                String::new()
            } else {
                format!(" (ports {:?})", self.loss_ports)
            },
            humantime::format_duration(self.jitter),
            self.mtu,
            humantime::format_duration(self.queue),
        )
    }
}

/// A flag value that did not parse: names the flag, the value and the accepted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {flag} '{value}': expected {expected}")]
pub struct UnitError {
    /// The flag, e.g. `--bandwidth`.
    pub flag: &'static str,
    /// What was given.
    pub value: String,
    /// The accepted form, with examples.
    pub expected: &'static str,
}

impl UnitError {
    fn new(flag: &'static str, value: &str, expected: &'static str) -> Self {
        Self {
            flag,
            value: value.to_owned(),
            expected,
        }
    }
}

/// The accepted form of `--rtt`.
pub const RTT_FORM: &str = "a duration such as 156ms, 40ms or 1s (at most 10s)";
/// The accepted form of `--bandwidth`.
pub const BANDWIDTH_FORM: &str =
    "a rate such as 100MB/s, 12.5MiB/s, 800Mbit/s or 1Gbit/s (at least 1kB/s)";
/// The accepted form of `--loss`.
pub const LOSS_FORM: &str = "a fraction such as 0.1% or 0.001 (0 up to, not including, 100%)";
/// The accepted form of `--jitter`.
pub const JITTER_FORM: &str = "a duration such as 2ms, at most half the RTT";
/// The accepted form of `--mtu`.
pub const MTU_FORM: &str = "a number of bytes from 576 to 65535, such as 1500 or 9000";
/// The accepted form of `--queue`.
pub const QUEUE_FORM: &str =
    "a duration such as 156ms (the buffer as time at line rate, at most 10s)";

/// Parses `--rtt`.
pub fn parse_rtt(s: &str) -> Result<Duration, UnitError> {
    parse_duration_flag("--rtt", s, RTT_FORM)
}

/// Parses `--jitter`.
pub fn parse_jitter(s: &str) -> Result<Duration, UnitError> {
    parse_duration_flag("--jitter", s, JITTER_FORM)
}

/// Parses `--queue`; zero is refused (a line without a buffer drops every burst).
pub fn parse_queue(s: &str) -> Result<Duration, UnitError> {
    let d = parse_duration_flag("--queue", s, QUEUE_FORM)?;
    if d.is_zero() {
        return Err(UnitError::new("--queue", s, QUEUE_FORM));
    }
    Ok(d)
}

/// Parses `--mtu`.
pub fn parse_mtu(s: &str) -> Result<u32, UnitError> {
    s.trim()
        .parse::<u32>()
        .ok()
        .filter(|m| (576..=65535).contains(m))
        .ok_or_else(|| UnitError::new("--mtu", s, MTU_FORM))
}

fn parse_duration_flag(
    flag: &'static str,
    s: &str,
    form: &'static str,
) -> Result<Duration, UnitError> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t).map_err(|_| UnitError::new(flag, s, form))
}

/// Parses `--loss`: `0.1%` or the fraction `0.001`.
pub fn parse_loss(s: &str) -> Result<f64, UnitError> {
    let err = || UnitError::new("--loss", s, LOSS_FORM);
    let t = s.trim();
    let fraction = match t.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map_err(|_| err())? / 100.0,
        None => t.parse::<f64>().map_err(|_| err())?,
    };
    if !fraction.is_finite() || !(0.0..1.0).contains(&fraction) {
        return Err(err());
    }
    Ok(fraction)
}

/// Parses `--bandwidth` into bytes per second.
///
/// Bytes go through `byte-unit` (`MB` = 10^6, `MiB` = 2^20); bits we read
/// ourselves (`kbit`, `Mbit`, `Gbit`, decimal, and the `bps` spelling), since
/// `byte-unit` reads a lowercase `b` as bits but not the word `bit`.
pub fn parse_bandwidth(s: &str) -> Result<u64, UnitError> {
    let err = || UnitError::new("--bandwidth", s, BANDWIDTH_FORM);
    let t = s.trim();
    let (body, bits) = if let Some(b) = t.strip_suffix("bps") {
        (b, true)
    } else {
        let b = t
            .strip_suffix("/s")
            .or_else(|| t.strip_suffix("/sec"))
            .ok_or_else(err)?;
        match b.strip_suffix("bit") {
            Some(b) => (b, true),
            None => (b, false),
        }
    };
    let bytes = if bits {
        let body = body.trim_end();
        let split = body
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(body.len());
        let (num, prefix) = body.split_at(split);
        let num: f64 = num.parse().map_err(|_| err())?;
        let scale = match prefix.trim() {
            "" => 1.0,
            "k" | "K" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            "T" => 1e12,
            "Ki" => 1024.0,
            "Mi" => 1024.0 * 1024.0,
            "Gi" => 1024.0 * 1024.0 * 1024.0,
            _ => return Err(err()),
        };
        let v = num * scale / 8.0;
        if !v.is_finite() || v >= u64::MAX as f64 {
            return Err(err());
        }
        v.round() as u64
    } else {
        // Demand an explicit byte unit: `100M/s` is ambiguous to a reader.
        if !body.trim_end().ends_with('B') {
            return Err(err());
        }
        byte_unit::Byte::parse_str(body, false)
            .map_err(|_| err())?
            .as_u64()
    };
    if bytes < 1000 {
        return Err(err());
    }
    Ok(bytes)
}

/// `12.5 MB/s (100 Mbit/s)`: decimal units, the way link rates are sold.
pub fn format_rate(bytes_per_s: f64) -> String {
    let (v, u) = scale_decimal(bytes_per_s);
    let (bv, bu) = scale_decimal(bytes_per_s * 8.0);
    format!("{v:.1} {u}B/s ({bv:.0} {bu}bit/s)")
}

fn scale_decimal(v: f64) -> (f64, &'static str) {
    if v >= 1e9 {
        (v / 1e9, "G")
    } else if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_accepts_bytes_and_bits() {
        assert_eq!(parse_bandwidth("100MB/s"), Ok(100_000_000));
        assert_eq!(parse_bandwidth("12.5MiB/s"), Ok(13_107_200));
        assert_eq!(parse_bandwidth("800Mbit/s"), Ok(100_000_000));
        assert_eq!(parse_bandwidth("1Gbit/s"), Ok(125_000_000));
        assert_eq!(parse_bandwidth("20 MB/s"), Ok(20_000_000));
        assert_eq!(parse_bandwidth("100Mbps"), Ok(12_500_000));
        assert_eq!(parse_bandwidth("1.5GB/s"), Ok(1_500_000_000));
    }

    #[test]
    fn bandwidth_errors_name_the_flag_and_the_form() {
        for bad in [
            "100", "100MB", "100M/s", "fast", "0MB/s", "12Xbit/s", "-1MB/s", "",
        ] {
            let e = parse_bandwidth(bad).unwrap_err();
            assert_eq!(e.flag, "--bandwidth", "{bad}");
            let msg = e.to_string();
            assert!(
                msg.contains("--bandwidth") && msg.contains("100MB/s"),
                "{msg}"
            );
        }
    }

    #[test]
    fn loss_accepts_percent_and_fraction() {
        assert_eq!(parse_loss("0.1%"), Ok(0.001));
        assert_eq!(parse_loss("0.001"), Ok(0.001));
        assert_eq!(parse_loss("1%"), Ok(0.01));
        assert_eq!(parse_loss("0"), Ok(0.0));
        for bad in ["100%", "1", "-1%", "x", "nan", "1e400"] {
            let e = parse_loss(bad).unwrap_err();
            assert!(e.to_string().contains("--loss"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations_and_mtu() {
        assert_eq!(parse_rtt("156ms"), Ok(Duration::from_millis(156)));
        assert_eq!(parse_jitter("0"), Ok(Duration::ZERO));
        assert_eq!(parse_queue("1s"), Ok(Duration::from_secs(1)));
        assert!(parse_queue("0").is_err());
        assert!(parse_rtt("156").unwrap_err().to_string().contains("--rtt"));
        assert_eq!(parse_mtu("9000"), Ok(9000));
        assert!(parse_mtu("100").unwrap_err().to_string().contains("576"));
    }

    #[test]
    fn queue_and_bdp_follow_the_rate() {
        let c = LinkConfig::new(Duration::from_millis(156), 100_000_000);
        assert_eq!(c.queue_bytes(), 15_600_000);
        assert_eq!(c.bdp_bytes(), 31_200_000);
        assert!(c.validate().is_ok());
        let mut bad = c.clone();
        bad.jitter = Duration::from_millis(100);
        assert_eq!(bad.validate().unwrap_err().flag, "--jitter");
    }
}

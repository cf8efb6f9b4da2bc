//! Units for people, and the two link formulas every stage quotes.
//!
//! Why one module: the verdict, the headless line, the TUI, `tune` and the
//! lab all print bytes, rates and durations, and all reason with the same
//! bandwidth-delay product and Mathis bound. When each carried its own copy
//! the copies drifted (four byte formatters, three BDP formulas, two Mathis
//! constants). Every figure a person reads is formatted here, and every BDP
//! or Mathis figure is computed here.
//!
//! Figures use decimal units (MB = 10⁶ bytes), the way link rates are sold
//! and the way the headless line prints MB/s. The formats are this project's
//! own (`80.1 KB`, `15.6M`, `850us`): tests and TUI snapshots assert them to
//! the letter, and no crate writes them (`humansize` and `bytesize` write
//! `kB` and two decimals), so the few lines of scaling are written here.
use std::time::Duration;

/// One decimal kilo (`k`): 10³.
const KILO: f64 = 1e3;
/// One decimal mega (`M`): 10⁶.
const MEGA: f64 = 1e6;
/// One decimal giga (`G`): 10⁹.
const GIGA: f64 = 1e9;
/// One binary mebi (`Mi`): 2²⁰.
const MIB: u64 = 1 << 20;
/// Microseconds in a second, for the `*_us` fields.
const US_PER_S: u128 = 1_000_000;
/// Bits in a byte, for link rates quoted in bit/s.
const BITS_PER_BYTE: f64 = 8.0;

/// Mathis et al.'s constant `C = √(3/2)` for Reno-style loss recovery with
/// delayed ACKs off: `rate ≤ MSS / (RTT · √p) · C`.
pub const MATHIS_C: f64 = 1.224_744_871_391_589;

/// A finite, non-negative figure (NaN and ±∞ read as 0): what a formatter
/// shows for a rate whose denominator was zero.
fn sane(v: f64) -> f64 {
    if v.is_finite() {
        v.max(0.0)
    } else {
        0.0
    }
}

/// A value scaled to its decimal prefix: `(80.1, "K")` for 80 100.
/// `kilo` names the 10³ prefix (`K` for bytes, `k` for bits).
fn scale(v: f64, kilo: &'static str) -> (f64, &'static str) {
    if v >= GIGA {
        (v / GIGA, "G")
    } else if v >= MEGA {
        (v / MEGA, "M")
    } else if v >= KILO {
        (v / KILO, kilo)
    } else {
        (v, "")
    }
}

/// Bytes in decimal units: `512 B`, `80.1 KB`, `15.6 MB`, `1.2 GB`.
pub fn bytes(bytes: f64) -> String {
    match scale(sane(bytes), "K") {
        (b, "") => format!("{b:.0} B"),
        (v, p) => format!("{v:.1} {p}B"),
    }
}

/// Bytes in at most six characters, for table cells: `512B`, `80.1K`,
/// `15.6M`, `1.2G`.
pub fn bytes_short(bytes: f64) -> String {
    match scale(sane(bytes), "K") {
        (b, "") => format!("{b:.0}B"),
        (v, p) => format!("{v:.1}{p}"),
    }
}

/// Bytes always in megabytes, one decimal, for columns that line up:
/// `0.1M`, `15.6M`.
pub fn megabytes(bytes: f64) -> String {
    format!("{:.1}M", bytes / MEGA)
}

/// An exact byte count with its size beside it, for settings a person
/// types back: `4194304 (4 MiB)` when it is a whole number of MiB,
/// `212992 (213.0 kB)` otherwise.
pub fn bytes_exact(bytes: u64) -> String {
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{bytes} ({} MiB)", bytes / MIB)
    } else {
        format!("{bytes} ({})", mb_or_kb(bytes as f64))
    }
}

/// A size in MB, or kB below one MB, one decimal: `15.6 MB`, `213.0 kB`
/// (the sizes `tune` compares with a BDP).
pub fn mb_or_kb(bytes: f64) -> String {
    if bytes >= MEGA {
        format!("{:.1} MB", bytes / MEGA)
    } else {
        format!("{:.1} kB", bytes / KILO)
    }
}

/// A rate in decimal units per second: `100.0 MB/s`, `512 B/s`.
pub fn rate(bytes_per_s: f64) -> String {
    format!("{}/s", bytes(bytes_per_s))
}

/// A rate always in MB/s, with a second decimal below 1 MB/s so that a
/// slow rate does not read as zero: `20.0 MB/s`, `0.21 MB/s`.
pub fn rate_mb(bytes_per_s: f64) -> String {
    if bytes_per_s >= MEGA {
        format!("{:.1} MB/s", bytes_per_s / MEGA)
    } else {
        format!("{:.2} MB/s", bytes_per_s / MEGA)
    }
}

/// A link rate in bytes and bits per second, the way links are sold:
/// `12.5 MB/s (100 Mbit/s)`.
pub fn link_rate(bytes_per_s: f64) -> String {
    let (v, u) = scale(bytes_per_s, "k");
    let (bv, bu) = scale(bytes_per_s * BITS_PER_BYTE, "k");
    format!("{v:.1} {u}B/s ({bv:.0} {bu}bit/s)")
}

/// Below this a count is printed whole (`9999`): four digits fit a cell.
const COUNT_WHOLE_BELOW: f64 = 1e4;

/// A count in at most six characters: `1500`, `97.7K`, `1.2M`, `3.4G`.
pub fn count_short(n: f64) -> String {
    let n = sane(n);
    if n < COUNT_WHOLE_BELOW {
        return format!("{n:.0}");
    }
    let (v, p) = scale(n, "K");
    format!("{v:.1}{p}")
}

/// A percentage with the precision its size deserves: `62%`, `2.0%`, `0.05%`.
pub fn pct(pct: f64) -> String {
    let p = if pct.is_finite() { pct } else { 0.0 };
    if p.abs() >= 10.0 {
        format!("{p:.0}%")
    } else if p.abs() >= 1.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.2}%")
    }
}

/// A latency in microseconds, in human units: `850us`, `12.3ms`, `1.20s`.
pub fn micros(us: u64) -> String {
    let d = Duration::from_micros(us);
    if us < 1_000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        format!("{:.1}ms", d.as_secs_f64() * KILO)
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

/// Seconds in the units of [`micros`]: `850us`, `156.0ms`, `2.00s`.
pub fn secs(secs: f64) -> String {
    micros((sane(secs) * MEGA).round() as u64)
}

/// A [`Duration`] in the units of [`micros`].
pub fn duration(d: Duration) -> String {
    micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The bandwidth-delay product: the bytes one connection must keep in
/// flight to fill a link of `bytes_per_s` at `rtt_us`, rounded up (a window
/// one byte short does not fill the link). Saturates at `u64::MAX`.
pub fn bdp_bytes(bytes_per_s: u64, rtt_us: u64) -> u64 {
    let b = (u128::from(bytes_per_s) * u128::from(rtt_us)).div_ceil(US_PER_S);
    u64::try_from(b).unwrap_or(u64::MAX)
}

/// The BDP of a rate measured as a float (bytes/s), rounded up; 0 for a
/// rate that is not a positive finite number.
pub fn bdp_bytes_f64(bytes_per_s: f64, rtt_us: u64) -> u64 {
    (sane(bytes_per_s) * rtt_us as f64 / MEGA).ceil() as u64
}

/// The throughput a window of `window_bytes` allows at `rtt`: window / RTT.
/// Infinite at a zero RTT.
pub fn window_ceiling_bytes_per_s(window_bytes: f64, rtt: Duration) -> f64 {
    window_bytes / rtt.as_secs_f64()
}

/// The Mathis bound in bytes/s on one loss-based TCP connection:
/// `MSS / (RTT · √p) · C`. Infinite without loss (no bound), zero without a
/// valid MSS or RTT.
pub fn mathis_bytes_per_s(mss_bytes: f64, rtt_s: f64, loss_rate: f64) -> f64 {
    if loss_rate <= 0.0 || !loss_rate.is_finite() {
        return f64::INFINITY;
    }
    if mss_bytes <= 0.0 || rtt_s <= 0.0 {
        return 0.0;
    }
    mss_bytes / (rtt_s * loss_rate.sqrt()) * MATHIS_C
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_pick_the_decimal_prefix_that_keeps_one_to_three_digits() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(80_100.0), "80.1 KB");
        assert_eq!(bytes(15_600_000.0), "15.6 MB");
        assert_eq!(bytes(1_200_000_000.0), "1.2 GB");
    }

    #[test]
    fn bytes_of_a_nonsense_figure_read_as_zero() {
        assert_eq!(bytes(f64::NAN), "0 B");
        assert_eq!(bytes(-5.0), "0 B");
        assert_eq!(rate(f64::INFINITY), "0 B/s");
    }

    #[test]
    fn short_bytes_drop_the_space_and_the_b() {
        assert_eq!(bytes_short(512.0), "512B");
        assert_eq!(bytes_short(80_100.0), "80.1K");
        assert_eq!(bytes_short(15_600_000.0), "15.6M");
    }

    #[test]
    fn megabytes_stay_in_one_unit() {
        assert_eq!(megabytes(100_000.0), "0.1M");
        assert_eq!(megabytes(15_600_000.0), "15.6M");
    }

    #[test]
    fn exact_bytes_name_whole_mebibytes() {
        assert_eq!(bytes_exact(4 << 20), "4194304 (4 MiB)");
        assert_eq!(bytes_exact(212_992), "212992 (213.0 kB)");
        assert_eq!(bytes_exact(6_291_457), "6291457 (6.3 MB)");
    }

    #[test]
    fn link_rates_quote_bytes_and_bits() {
        assert_eq!(link_rate(12_500_000.0), "12.5 MB/s (100 Mbit/s)");
        assert_eq!(link_rate(125_000.0), "125.0 kB/s (1 Mbit/s)");
    }

    #[test]
    fn counts_stay_whole_up_to_four_digits() {
        assert_eq!(count_short(1500.0), "1500");
        assert_eq!(count_short(97_700.0), "97.7K");
        assert_eq!(count_short(1_200_000.0), "1.2M");
    }

    #[test]
    fn mb_rates_keep_a_slow_rate_visible() {
        assert_eq!(rate_mb(20e6), "20.0 MB/s");
        assert_eq!(rate_mb(210_000.0), "0.21 MB/s");
    }

    #[test]
    fn percentages_keep_two_significant_digits() {
        assert_eq!(pct(62.4), "62%");
        assert_eq!(pct(2.0), "2.0%");
        assert_eq!(pct(0.05), "0.05%");
    }

    #[test]
    fn latencies_pick_us_ms_or_s() {
        assert_eq!(micros(850), "850us");
        assert_eq!(micros(12_345), "12.3ms");
        assert_eq!(micros(1_200_000), "1.20s");
        assert_eq!(secs(0.156), "156.0ms");
        assert_eq!(duration(Duration::from_secs(2)), "2.00s");
    }

    #[test]
    fn bdp_is_rate_times_rtt_rounded_up() {
        assert_eq!(bdp_bytes(100_000_000, 156_000), 15_600_000);
        assert_eq!(bdp_bytes(3, 1), 1);
        assert_eq!(bdp_bytes(u64::MAX, u64::MAX), u64::MAX);
        assert_eq!(bdp_bytes_f64(100e6, 156_000), 15_600_000);
        assert_eq!(bdp_bytes_f64(f64::NAN, 156_000), 0);
    }

    #[test]
    fn window_ceiling_is_window_over_rtt() {
        let c = window_ceiling_bytes_per_s(1_560_000.0, Duration::from_millis(156));
        assert!((c - 10e6).abs() < 1e-3, "{c}");
    }

    #[test]
    fn mathis_falls_with_the_square_root_of_loss() {
        let one = mathis_bytes_per_s(1448.0, 0.156, 0.0001);
        let hundred = mathis_bytes_per_s(1448.0, 0.156, 0.01);
        assert!((one / hundred - 10.0).abs() < 1e-9);
        assert!((one - 1448.0 / (0.156 * 0.01) * MATHIS_C).abs() < 1e-6);
    }

    #[test]
    fn mathis_has_no_bound_without_loss_and_none_without_a_path() {
        assert_eq!(mathis_bytes_per_s(1448.0, 0.156, 0.0), f64::INFINITY);
        assert_eq!(mathis_bytes_per_s(0.0, 0.156, 0.01), 0.0);
        assert_eq!(mathis_bytes_per_s(1448.0, 0.0, 0.01), 0.0);
    }
}

//! The "interrupts" limit: one CPU saturated by softirq work while the others idle.
//!
//! Its name, explanation (headline, evidence, remedy with the figure to
//! set) and ceiling live here; when its time is charged is the one
//! attribution table in `rules.rs`.
use super::prelude::*;

/// One CPU saturated by softirq work while the others idle.
pub(super) const CLASS: Class = Class::new("interrupts", "irq", explain);

fn explain(i: &Inputs<'_>) -> Explained {
    let Inputs { ctx, .. } = *i;
    let share = units::pct(i.pct);
    let (what, remedy) = match &ctx.saturation {
        Some(s) => {
            let net_rx = s
                .net_rx_pct
                .map_or(String::new(), |n| format!(" (NET_RX {})", units::pct(n)));
            let mask: u64 = s
                .cpus
                .iter()
                .filter(|c| **c < 64)
                .fold(0, |m, c| m | 1 << c);
            let rps = match &ctx.device {
                Some(dev) => format!(
                    "for q in /sys/class/net/{dev}/queues/rx-*; do echo {mask:x} > $q/rps_cpus; done"
                ),
                None => format!(
                    "echo {mask:x} > /sys/class/net/DEV/queues/rx-N/rps_cpus for each receive \
                     queue of the device the flows arrive on"
                ),
            };
            (
                format!(
                    "CPU {} in softirq {}{net_rx} while the other CPUs' median is {}",
                    s.cpu,
                    units::pct(s.si_pct),
                    units::pct(s.others_median_pct)
                ),
                format!(
                    "one core drowns in softirq (CPU {}): spread IRQs (irqbalance, or \
                     /proc/irq/N/smp_affinity), enable RPS/RFS ({rps}; \
                     sysctl -w net.core.rps_sock_flow_entries=32768), and use more connections so \
                     the flows hash onto more queues",
                    s.cpu
                ),
            )
        }
        None => (
            "one CPU saturated in softirq".to_owned(),
            "spread IRQs (irqbalance / smp_affinity), enable RPS/RFS, more connections".to_owned(),
        ),
    };
    Explained {
        headline: what.clone(),
        evidence: format!(
            "interrupt-limited {share} of the time: {what}, in {} of {} intervals",
            ctx.saturated_intervals, ctx.intervals
        ),
        remedy,
    }
}

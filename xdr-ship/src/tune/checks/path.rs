//! The path's behaviour: congestion control against loss (the Mathis
//! bound), the qdisc that paces, and slow start after idle.
use super::{
    mb, rate, sysctl_cmd, unreadable, Check, HostState, Link, Role, Status, INITIAL_CWND, MSS,
};

/// The Mathis et al. bound on a loss-based TCP's rate: MSS/RTT × √(3/2)/√p.
pub fn mathis_bytes_per_s(link: &Link, loss: f64) -> f64 {
    crate::units::mathis_bytes_per_s(MSS as f64, link.rtt_s(), loss)
}

/// `net.ipv4.tcp_congestion_control`: BBR for long, lossy paths.
pub fn congestion_control(host: &HostState, link: &Link) -> Check {
    let key = "net.ipv4.tcp_congestion_control";
    let Some(cur) = host.sysctl(key) else {
        return unreadable(key, Role::Sender, "bbr".into());
    };
    let list = |k: &str| -> Vec<String> {
        host.sysctl(k)
            .map(|v| v.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let available = list("net.ipv4.tcp_available_congestion_control");
    let allowed = list("net.ipv4.tcp_allowed_congestion_control");
    let mathis = mathis_bytes_per_s(link, 0.001);
    let reason = format!(
        "BBR paces at the bottleneck rate it measures and does not read random loss as \
         congestion; loss-based cubic/reno are held to the Mathis bound MSS/(RTT·√p): at {} ms \
         and 0.1% loss, {} per connection",
        link.rtt_us / 1000,
        rate(mathis)
    );
    let current = format!("{cur} (available: {})", available.join(" "));
    let base = Check {
        setting: key.into(),
        current,
        needed: "bbr".into(),
        status: Status::Ok,
        why: reason.clone(),
        side: Role::Sender,
        commands: Vec::new(),
        write: None,
        not_applied: None,
    };
    if cur == "bbr" {
        return base;
    }
    if !available.iter().any(|a| a == "bbr") {
        return Check {
            status: Status::Info,
            why: format!(
                "{reason}. bbr is not loaded here: `modprobe tcp_bbr` if the kernel ships it"
            ),
            commands: Vec::new(),
            ..base
        };
    }
    let mut why = reason;
    if !allowed.is_empty() && !allowed.iter().any(|a| a == "bbr") {
        why.push_str(
            ". bbr is not in tcp_allowed_congestion_control, so only the initial network \
             namespace may make it the default (a program can still ask for it per socket \
             with TCP_CONGESTION)",
        );
    }
    Check {
        status: Status::Change,
        why,
        commands: vec![sysctl_cmd(key, "bbr")],
        not_applied: Some(
            "changes the algorithm of every new connection on the host: a choice for the \
             operator, not a limit to raise"
                .into(),
        ),
        ..base
    }
}

/// `net.core.default_qdisc`: fq, for pacing.
pub fn default_qdisc(host: &HostState) -> Check {
    let key = "net.core.default_qdisc";
    let Some(cur) = host.sysctl(key) else {
        return unreadable(key, Role::Sender, "fq".into());
    };
    let bbr = host.sysctl("net.ipv4.tcp_congestion_control") == Some("bbr")
        || host
            .sysctl("net.ipv4.tcp_available_congestion_control")
            .is_some_and(|a| a.split_whitespace().any(|c| c == "bbr"));
    let base = Check {
        setting: key.into(),
        current: cur.to_owned(),
        needed: "fq".into(),
        status: Status::Ok,
        why: "fq paces each flow at the rate its congestion control sets (BBR's pacing rate), \
              cheaply, in the qdisc"
            .into(),
        side: Role::Sender,
        commands: Vec::new(),
        write: None,
        not_applied: None,
    };
    if cur == "fq" {
        return base;
    }
    let fallback = "BBR paces by itself without it (TCP internal pacing, Linux 4.20+), at \
                    some CPU cost";
    match (bbr, host.fq_available) {
        (true, Some(true)) => {
            let mut commands = vec![sysctl_cmd(key, "fq")];
            // default_qdisc only reaches qdiscs created afterwards.
            for nic in &host.nics {
                commands.push(if nic.tx_queues > 1 {
                    format!("tc qdisc replace dev {} root mq", nic.name)
                } else {
                    format!("tc qdisc replace dev {} root fq", nic.name)
                });
            }
            Check {
                status: Status::Change,
                why: format!(
                    "{}; default_qdisc only applies to qdiscs created afterwards, hence the tc \
                     lines (mq gives each transmit queue a default_qdisc child). {fallback}, so \
                     this is an efficiency gain, not a cap",
                    base.why
                ),
                commands,
                not_applied: Some("replaces the NICs' queueing discipline: run it yourself".into()),
                ..base
            }
        }
        (true, avail) => Check {
            status: Status::Info,
            why: format!(
                "{}; {} on this host. {fallback}",
                base.why,
                if avail == Some(false) {
                    "the fq qdisc is not installed (no sch_fq module)"
                } else {
                    "whether the fq qdisc exists cannot be told (no module tree to look in)"
                }
            ),
            ..base
        },
        (false, _) => Check {
            status: Status::Info,
            why: format!(
                "{}; it matters with BBR, which is not available here",
                base.why
            ),
            ..base
        },
    }
}

/// `net.ipv4.tcp_slow_start_after_idle`: off for bursty shippers.
pub fn slow_start_after_idle(host: &HostState, link: &Link) -> Check {
    let key = "net.ipv4.tcp_slow_start_after_idle";
    let Some(cur) = host.sysctl_u64(key) else {
        return unreadable(key, Role::Sender, "0".into());
    };
    let ok = cur == 0;
    let iw = INITIAL_CWND * MSS;
    let rounds = (link.bdp_bytes() as f64 / iw as f64).log2().ceil().max(0.0) as u64;
    Check {
        setting: key.into(),
        current: cur.to_string(),
        needed: "0".into(),
        status: if ok { Status::Ok } else { Status::Change },
        why: format!(
            "when on, a connection idle for an RTO falls back to the initial window of \
             {INITIAL_CWND} segments ({}) (RFC 5681 restart): a shipper that pauses between \
             bursts then needs {rounds} RTTs ({:.1} s) of slow start to reopen a BDP window",
            mb(iw as f64),
            rounds as f64 * link.rtt_s()
        ),
        side: Role::Sender,
        commands: if ok {
            Vec::new()
        } else {
            vec![sysctl_cmd(key, "0")]
        },
        write: None,
        not_applied: (!ok).then(|| {
            "--apply never lowers a value, and this advice is to switch one off: run it yourself"
                .into()
        }),
    }
}

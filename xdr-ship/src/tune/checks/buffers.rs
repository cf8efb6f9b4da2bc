//! Socket buffers: the caps on explicit SO_RCVBUF/SO_SNDBUF, how far
//! autotuning may grow them, and the switches a window above 64 KiB needs.
use super::{
    bytes, mb, rate, round_up_mib, sysctl_cmd, unreadable, Check, HostState, Link, Raise, Role,
    Status, SysctlWrite, WindowRule,
};

/// `net.core.rmem_max`: the cap on an explicit SO_RCVBUF.
pub fn rmem_max(host: &HostState, link: &Link, rule: WindowRule) -> Check {
    let key = "net.core.rmem_max";
    let bdp = link.bdp_bytes();
    // setsockopt(SO_RCVBUF, r) gives sk_rcvbuf = 2 * min(r, rmem_max); the
    // window is rule × sk_rcvbuf. So the request, and the cap, must reach
    // buffer_for(BDP) / 2.
    let request = rule.buffer_for(bdp).div_ceil(2);
    let needed = round_up_mib(request);
    let Some(cur) = host.sysctl_u64(key) else {
        return unreadable(key, Role::Receiver, format!("≥ {}", bytes(needed)));
    };
    let window = rule.window_of(cur.saturating_mul(2));
    Raise {
        host,
        key,
        side: Role::Receiver,
        current: cur,
        needed,
        value: needed.to_string(),
        why: format!(
            "an explicit SO_RCVBUF is capped at rmem_max, then doubled by the kernel for \
             bookkeeping: buffer = 2 × min(request, rmem_max); {pct:.0}% of the buffer becomes \
             window, so a window of BDP {bdp} needs a request (and rmem_max) of ≥ {request} \
             bytes. Now the largest SO_RCVBUF gives 2 × {cur} = {buf} of buffer, a window of \
             {win}: at most {ceil} per connection. (xdr-ship keeps autotuning when this cap \
             would bite, so for it tcp_rmem matters; the seed and most programs set SO_RCVBUF.)",
            pct = rule.percent(),
            bdp = mb(bdp as f64),
            buf = mb(cur as f64 * 2.0),
            win = mb(window as f64),
            ceil = rate(link.ceiling_bytes_per_s(window)),
        ),
    }
    .check()
}

/// `net.core.wmem_max`: the cap on an explicit SO_SNDBUF.
pub fn wmem_max(host: &HostState, link: &Link) -> Check {
    let key = "net.core.wmem_max";
    let bdp = link.bdp_bytes();
    // setsockopt(SO_SNDBUF, s) gives sk_sndbuf = 2 * min(s, wmem_max), and
    // queued data is counted at its skb truesize: the kernel's doubling
    // assumes half is overhead, so the request itself is the payload that
    // fits — BDP of unacknowledged data needs a request of BDP.
    let needed = round_up_mib(bdp);
    let Some(cur) = host.sysctl_u64(key) else {
        return unreadable(key, Role::Sender, format!("≥ {}", bytes(needed)));
    };
    Raise {
        host,
        key,
        side: Role::Sender,
        current: cur,
        needed,
        value: needed.to_string(),
        why: format!(
            "an explicit SO_SNDBUF is capped at wmem_max and doubled (buffer = 2 × min(request, \
             wmem_max)); the send buffer holds every unacknowledged byte at its skb truesize, \
             and the doubling is the kernel's allowance for that overhead, so BDP {bdp} in \
             flight needs a request (and wmem_max) of ≥ {bdp_exact} bytes. Now: at most {cur_mb} \
             in flight, {ceil} per connection (the seed asked for 5 MiB).",
            bdp = mb(bdp as f64),
            bdp_exact = bdp,
            cur_mb = mb(cur as f64),
            ceil = rate(link.ceiling_bytes_per_s(cur)),
        ),
    }
    .check()
}

/// `net.ipv4.tcp_rmem`: how far receive autotuning may grow a buffer.
pub fn tcp_rmem(host: &HostState, link: &Link, rule: WindowRule) -> Check {
    let key = "net.ipv4.tcp_rmem";
    let bdp = link.bdp_bytes();
    let exact = rule.buffer_for(bdp);
    let needed = round_up_mib(exact);
    let Some([min, def, max]) = host
        .sysctl_fields(key)
        .and_then(|f| <[u64; 3]>::try_from(f).ok())
    else {
        return unreadable(key, Role::Receiver, format!("max ≥ {}", bytes(needed)));
    };
    let window = rule.window_of(max);
    let mut c = Raise {
        host,
        key,
        side: Role::Receiver,
        current: max,
        needed,
        value: format!("{min} {def} {needed}"),
        why: format!(
            "autotuning (tcp_moderate_rcvbuf) grows a socket's receive buffer up to the third \
             field, and the advertised window is {pct:.0}% of the buffer{rule}, so a window of \
             BDP {bdp} needs max ≥ {exact} bytes. Now: a window of at most {win}, {ceil} per \
             connection.",
            pct = rule.percent(),
            rule = if rule.per_socket {
                " (scaling_ratio, measured per socket since 6.6; planned at its 50% start)"
            } else {
                " (tcp_adv_win_scale)"
            },
            bdp = mb(bdp as f64),
            win = mb(window as f64),
            ceil = rate(link.ceiling_bytes_per_s(window)),
        ),
    }
    .check();
    c.needed = format!("max ≥ {}", bytes(needed));
    c
}

/// `net.ipv4.tcp_wmem`: how far send autotuning may grow a buffer.
pub fn tcp_wmem(host: &HostState, link: &Link) -> Check {
    let key = "net.ipv4.tcp_wmem";
    let bdp = link.bdp_bytes();
    let exact = bdp.saturating_mul(2);
    let needed = round_up_mib(exact);
    let Some([min, def, max]) = host
        .sysctl_fields(key)
        .and_then(|f| <[u64; 3]>::try_from(f).ok())
    else {
        return unreadable(key, Role::Sender, format!("max ≥ {}", bytes(needed)));
    };
    let mut c = Raise {
        host,
        key,
        side: Role::Sender,
        current: max,
        needed,
        value: format!("{min} {def} {needed}"),
        why: format!(
            "autotuning grows a socket's send buffer (tcp_sndbuf_expand: 2 × cwnd × a \
             segment's truesize, 3 × under BBR) up to the third field, and queued bytes count \
             at their truesize; with the kernel's own factor of 2, BDP {bdp} in flight needs \
             max ≥ {exact} bytes. Now: about {half} in flight, {ceil} per connection.",
            bdp = mb(bdp as f64),
            half = mb(max as f64 / 2.0),
            ceil = rate(link.ceiling_bytes_per_s(max / 2)),
        ),
    }
    .check();
    c.needed = format!("max ≥ {}", bytes(needed));
    c
}

/// `net.ipv4.tcp_adv_win_scale`: informs which window rule applies.
pub fn adv_win_scale(host: &HostState, rule: WindowRule) -> Check {
    let key = "net.ipv4.tcp_adv_win_scale";
    let current = host.sysctl(key).unwrap_or("not readable here").to_owned();
    let why = if rule.per_socket {
        format!(
            "obsolete on this kernel (6.6+): the window is buffer × scaling_ratio/256, measured \
             per socket from skb->len/truesize; the buffer figures above plan with its {:.0}% start",
            rule.percent()
        )
    } else {
        format!(
            "this kernel advertises buffer − buffer/2^scale (scale > 0) or buffer/2^-scale as \
             window: {:.0}% here, which the buffer figures above account for",
            rule.percent()
        )
    };
    Check {
        setting: key.into(),
        current,
        needed: format!("window = {:.0}% of buffer", rule.percent()),
        status: Status::Info,
        why,
        side: Role::Receiver,
        commands: Vec::new(),
        write: None,
        not_applied: None,
    }
}

/// A 0/1 switch that must be on.
fn switch_on(host: &HostState, key: &'static str, side: Role, why: String) -> Check {
    let Some(cur) = host.sysctl_u64(key) else {
        return unreadable(key, side, "1".into());
    };
    let ok = cur != 0;
    Check {
        setting: key.into(),
        current: cur.to_string(),
        needed: "1".into(),
        status: if ok { Status::Ok } else { Status::Change },
        why,
        side,
        commands: if ok {
            Vec::new()
        } else {
            vec![sysctl_cmd(key, "1")]
        },
        write: (!ok).then(|| SysctlWrite {
            key: key.into(),
            value: "1".into(),
        }),
        not_applied: (!ok && !host.writable(key))
            .then(|| "read-only in this network namespace".into()),
    }
}

/// `net.ipv4.tcp_window_scaling`: windows above 64 KiB.
pub fn window_scaling(host: &HostState, link: &Link) -> Check {
    switch_on(
        host,
        "net.ipv4.tcp_window_scaling",
        Role::Both,
        format!(
            "window scaling (RFC 7323), negotiated in the SYN by both ends, lets a window \
             exceed 64 KiB; without it a connection is capped at 65535 B / RTT = {}",
            rate(link.ceiling_bytes_per_s(65535))
        ),
    )
}

/// `net.ipv4.tcp_moderate_rcvbuf`: receive autotuning.
pub fn moderate_rcvbuf(host: &HostState, link: &Link, rule: WindowRule) -> Check {
    let def = host
        .sysctl_fields("net.ipv4.tcp_rmem")
        .and_then(|f| f.get(1).copied())
        .unwrap_or(131072);
    let window = rule.window_of(def);
    switch_on(
        host,
        "net.ipv4.tcp_moderate_rcvbuf",
        Role::Receiver,
        format!(
            "receive-buffer autotuning: without it a socket keeps tcp_rmem's default of {def} \
             bytes, a window of {} and {} per connection",
            mb(window as f64),
            rate(link.ceiling_bytes_per_s(window))
        ),
    )
}

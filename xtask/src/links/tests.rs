use super::*;

fn run(rates: &[f64]) -> Run {
    Run {
        samples: rates
            .iter()
            .enumerate()
            .map(|(i, r)| ((i + 1) as f64, *r))
            .collect(),
        cpu_s: 2.0,
        line_cpu_s: 0.0,
        secs: rates.len() as f64,
    }
}

#[test]
fn steady_is_the_median_of_the_second_half() {
    let r = run(&[1.0, 2.0, 50.0, 100.0, 90.0, 110.0, 100.0, 100.0]);
    assert_eq!(r.steady(), 100.0);
}

#[test]
fn t90_is_the_first_interval_at_ninety_percent_of_steady() {
    let r = run(&[10.0, 50.0, 89.0, 95.0, 100.0, 100.0, 100.0, 100.0]);
    assert_eq!(r.t90(), Some(4.0));
}

#[test]
fn a_run_that_never_moves_has_no_t90() {
    assert_eq!(run(&[0.0; 6]).t90(), None);
}

#[test]
fn cv_of_a_flat_rate_is_zero_and_of_a_sawtooth_is_not() {
    assert_eq!(run(&[100.0; 10]).cv(), 0.0);
    let saw = run(&[
        100.0, 100.0, 100.0, 100.0, 100.0, 80.0, 120.0, 80.0, 120.0, 80.0,
    ]);
    assert!(saw.cv() > 0.15, "{}", saw.cv());
}

#[test]
fn cpu_per_mb_divides_by_what_was_delivered() {
    // 10 MB/s for 4 s = 40 MB for 2 CPU seconds: 50 ms per MB.
    assert_eq!(run(&[10.0; 4]).cpu_ms_per_mb(), 50.0);
}

#[test]
fn rusage_lines_add_user_and_system_time() {
    let lines = vec![
        "{\"x\":1}".to_owned(),
        "rusage: user_s=1.250 sys_s=0.750 max_rss_kib=100".to_owned(),
    ];
    assert_eq!(rusage_s(&lines), 2.0);
}

#[test]
fn line_cpu_is_read_from_the_lab_closing_line() {
    let lab = vec!["[lab] near→far delivered 1.0 MB in 1.0 s (1 MB/s), drops 0 queue / 0 loss, measured rtt 156.0 ms, line cpu 3.21 s".to_owned()];
    assert_eq!(line_cpu_s(&lab), 3.21);
}

#[test]
fn big_records_get_fewer_keys_so_the_far_store_fits() {
    assert_eq!(GRID[5].value_bytes, 65536);
    assert_eq!(GRID[5].keys(), 1024);
    assert_eq!(GRID[3].keys(), 67_108);
}

#[test]
fn the_time_bound_is_three_seconds_plus_four_round_trips() {
    assert!((GRID[3].t90_target_s() - 3.624).abs() < 1e-9);
}

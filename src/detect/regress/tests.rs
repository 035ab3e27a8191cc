//! Tests of the comparison driver with the statistical methods (the Siamese model has
//! its own golden tests in `model_tests.rs`).

use super::*;

/// A deterministic load test: `n` rows, load ramping to `users`, latency `rt` (+ a
/// small deterministic wiggle), the given success rate.
fn load_test(n: usize, users: f64, rt: f64, sr: f64) -> LoadTest {
    let mut t = LoadTest {
        kpis: [Some(vec![]), Some(vec![]), Some(vec![])],
        ..Default::default()
    };
    for i in 0..n {
        let w = users * (i + 1) as f64 / n as f64;
        let wiggle = ((i * 7919) % 13) as f64 / 13.0 - 0.5;
        t.timestamp.push(i as f64);
        t.workload.push(w);
        if let [Some(a), Some(b), Some(c)] = &mut t.kpis {
            a.push(rt * (1.0 + 0.1 * wiggle));
            b.push(w * 2.0 * (1.0 + 0.05 * wiggle));
            c.push(sr);
        }
    }
    t
}

fn opts(method: Method) -> Options {
    Options {
        method,
        ..Default::default()
    }
}

#[test]
fn ks_and_mwu_flag_a_latency_shift_and_only_it() {
    let base = load_test(120, 50.0, 0.10, 1.0);
    let slow = load_test(120, 50.0, 0.15, 1.0);
    for m in [Method::Ks, Method::Mwu] {
        let r = compare(&base, &slow, &opts(m), None).unwrap();
        assert_eq!(r.verdict, Verdict::Regression, "{m:?}");
        let rt = &r.kpis["response_time"];
        assert_eq!(rt.regression, Some(true));
        assert!(rt.p_value.unwrap() < 1e-6);
        assert_eq!(r.kpis["throughput"].regression, Some(false), "{m:?}");
        assert_eq!(r.kpis["success_rate"].regression, Some(false), "{m:?}");
        assert!(r.kpis["response_time"].probability.is_none());
    }
}

#[test]
fn identical_windows_are_normal() {
    let base = load_test(90, 30.0, 0.2, 0.99);
    for m in [Method::Ks, Method::Mwu] {
        let r = compare(&base, &base, &opts(m), None).unwrap();
        assert_eq!(r.verdict, Verdict::Normal, "{m:?}: {}", r.to_json());
    }
}

#[test]
fn statistical_tests_are_fooled_by_a_different_load_profile() {
    // The paper's Fig. 1(b): a heavier load alone shifts throughput. KS reports a
    // "regression" here; this is the weakness the Siamese model addresses.
    let base = load_test(120, 50.0, 0.10, 1.0);
    let heavier = load_test(120, 100.0, 0.10, 1.0);
    let r = compare(&base, &heavier, &opts(Method::Ks), None).unwrap();
    assert_eq!(r.kpis["throughput"].regression, Some(true));
}

#[test]
fn insufficient_data_is_never_normal() {
    let base = load_test(90, 30.0, 0.2, 1.0);
    let short = load_test(12, 30.0, 0.2, 1.0);
    let r = compare(&base, &short, &opts(Method::Ks), None).unwrap();
    assert_eq!(r.verdict, Verdict::InsufficientData);
    assert!(r
        .kpis
        .values()
        .all(|o| o.regression.is_none() && o.reason.is_some()));

    let mut idle = load_test(90, 30.0, 0.2, 1.0);
    idle.workload.iter_mut().for_each(|w| *w = 0.0);
    let r = compare(&base, &idle, &opts(Method::Mwu), None).unwrap();
    assert_eq!(r.verdict, Verdict::InsufficientData);

    // A KPI missing from one window: the others are judged, the verdict stays honest.
    let mut no_sr = load_test(90, 30.0, 0.2, 1.0);
    no_sr.kpis[Kpi::SuccessRate.index()] = None;
    let r = compare(&base, &no_sr, &opts(Method::Ks), None).unwrap();
    assert_eq!(r.verdict, Verdict::InsufficientData);
    assert_eq!(r.kpis["response_time"].regression, Some(false));
}

#[test]
fn only_the_asked_kpis_are_judged() {
    let base = load_test(90, 30.0, 0.2, 1.0);
    let mut o = opts(Method::Ks);
    o.kpis = vec![Kpi::Throughput];
    let r = compare(&base, &base, &o, None).unwrap();
    assert_eq!(r.kpis.len(), 1);
    assert!(r.kpis.contains_key("throughput"));
}

#[test]
fn siamese_without_a_model_is_an_error() {
    let base = load_test(90, 30.0, 0.2, 1.0);
    assert!(matches!(
        compare(&base, &base, &opts(Method::Siamese), None),
        Err(RegressError::NoModel)
    ));
}

#[test]
fn names_round_trip() {
    for k in Kpi::ALL {
        assert_eq!(k.name().parse::<Kpi>(), Ok(k));
    }
    for m in [Method::Siamese, Method::Ks, Method::Mwu] {
        assert_eq!(m.name().parse::<Method>(), Ok(m));
    }
    assert!("latency".parse::<Kpi>().is_err());
}

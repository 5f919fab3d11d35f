//! Passive ejection: immediate on connection failures, after a run of chosen statuses, and
//! bounded so that it never empties a site the probes say is up.

use std::time::Duration;

use sidekick::{Balancer, EndpointState, Outcome};

fn count(b: &Balancer, s: EndpointState) -> usize {
    b.endpoints().iter().filter(|e| e.state == s).count()
}

#[tokio::test]
async fn connect_failures_eject_at_once_but_never_more_than_the_share() {
    let b = Balancer::builder()
        .site("http://127.0.0.1:{21001...21004}")
        .health_check(false)
        .build()
        .unwrap();
    // Every endpoint fails every request.
    for _ in 0..100 {
        b.pick().unwrap().finish(Outcome::Connect);
    }
    assert_eq!(count(&b, EndpointState::Ejected), 2, "{:?}", b.endpoints());
    assert_eq!(count(&b, EndpointState::Up), 2);
    assert!(b.pick().is_ok(), "ejection emptied the site");
}

#[tokio::test]
async fn the_last_endpoint_is_never_ejected_even_at_full_share() {
    let b = Balancer::builder()
        .site("http://127.0.0.1:{21101...21103}")
        .health_check(false)
        .max_ejected_share(1.0)
        .build()
        .unwrap();
    for _ in 0..100 {
        b.pick().unwrap().finish(Outcome::Reset);
    }
    assert_eq!(count(&b, EndpointState::Ejected), 2);
    assert_eq!(count(&b, EndpointState::Up), 1);
}

#[tokio::test]
async fn a_run_of_chosen_statuses_ejects_and_other_answers_reset_the_run() {
    let b = Balancer::builder()
        .site("http://127.0.0.1:21201,http://127.0.0.1:21202")
        .health_check(false)
        .eject_statuses([503])
        .eject_after(3)
        // Alternate, so the penalised endpoint keeps getting requests in this test.
        .policy(sidekick::Policy::RoundRobin)
        .build()
        .unwrap();
    let first = b.pick().unwrap();
    let target = first.id();
    first.finish(Outcome::Status(503));
    let mut sent = 1;
    let next = |outcome: Outcome| {
        for _ in 0..100 {
            let l = b.pick().unwrap();
            if l.id() == target {
                l.finish(outcome);
                return;
            }
            l.finish(Outcome::Status(200));
        }
        panic!("endpoint {target} never picked");
    };
    next(Outcome::Status(503));
    next(Outcome::Status(200)); // breaks the run
    next(Outcome::Status(503));
    next(Outcome::Status(503));
    sent += 4;
    assert_eq!(sent, 5);
    assert_eq!(count(&b, EndpointState::Ejected), 0);
    next(Outcome::Status(503)); // third in a row
    assert_eq!(count(&b, EndpointState::Ejected), 1);
    // The default status set is empty: 503s alone never eject.
    let b = Balancer::builder()
        .site("http://127.0.0.1:21301,http://127.0.0.1:21302")
        .health_check(false)
        .build()
        .unwrap();
    for _ in 0..100 {
        b.pick().unwrap().finish(Outcome::Status(503));
    }
    assert_eq!(count(&b, EndpointState::Ejected), 0);
}

#[tokio::test(start_paused = true)]
async fn a_passing_probe_brings_an_ejected_endpoint_back() {
    let b = Balancer::builder()
        .site("http://127.0.0.1:21401,http://127.0.0.1:21402")
        .health_interval(Duration::from_secs(1))
        .health_jitter(0.0)
        .probe_fn(|_| async { Ok(()) })
        .build()
        .unwrap();
    b.ready(Duration::from_secs(1)).await.unwrap();
    b.pick().unwrap().finish(Outcome::Connect);
    assert_eq!(count(&b, EndpointState::Ejected), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(count(&b, EndpointState::Up), 2);
}

#[tokio::test]
async fn bad_configuration_names_the_bad_part() {
    let cases: Vec<(sidekick::Builder, &str)> = vec![
        (Balancer::builder(), "no site"),
        (Balancer::builder().site("ftp://h:1"), "ftp"),
        (Balancer::builder().site("http://h{1...}:9000"), "h{1...}"),
        (
            Balancer::builder()
                .site("http://h:1")
                .site("http://x{3...1}"),
            "site 2",
        ),
        (
            Balancer::builder()
                .site("http://h:1")
                .health_interval(Duration::ZERO),
            "health_interval",
        ),
        (
            Balancer::builder()
                .site("http://h:1")
                .max_ejected_share(1.5),
            "max_ejected_share",
        ),
        (
            Balancer::builder()
                .site("http://h:1")
                .healthy_statuses([700]),
            "700",
        ),
        (
            Balancer::builder().site("http://h:1").max_attempts(0),
            "max_attempts",
        ),
        (
            Balancer::builder()
                .site("http://h:1")
                .health_jitter(f64::NAN),
            "health_jitter",
        ),
    ];
    for (builder, needle) in cases {
        let err = builder.build().unwrap_err();
        assert!(err.is_config(), "{err:?}");
        assert!(
            err.to_string().contains(needle),
            "`{err}` does not name `{needle}`"
        );
    }
}

//! The shared attempt-policy vectors (tests/vectors/attempt_policy.txt), through the Rust API:
//! `Balancer::attempts`, `Attempts::pick` and `Attempts::decide`. The C, Go, Java and Python
//! suites check the same file through their bindings.

use std::sync::{Arc, Mutex};

use sidekick::retry::{self, Decision};
use sidekick::{Balancer, Event, Outcome};

const VECTORS: &str = include_str!("vectors/attempt_policy.txt");

/// One case of the file.
#[derive(Debug)]
struct Case {
    name: String,
    site: String,
    max_attempts: u32,
    exhausted: bool,
    method: String,
    key: bool,
    replayable: bool,
    steps: Vec<Step>,
}

#[derive(Debug)]
struct Step {
    outcome: Outcome,
    intact: bool,
    /// `done`, `retry:<reason>` or `giveup:<reason>`.
    expect: String,
}

fn flag(s: &str, what: &str, line: usize) -> bool {
    match s {
        "1" => true,
        "0" => false,
        other => panic!("line {line}: {what} must be 0 or 1, got {other:?}"),
    }
}

fn outcome(s: &str, line: usize) -> Outcome {
    match s {
        "success" => Outcome::Success,
        "connect" => Outcome::Connect,
        "reset" => Outcome::Reset,
        "timeout" => Outcome::Timeout,
        "failed" => Outcome::Failed,
        "cancelled" => Outcome::Cancelled,
        n => Outcome::Status(
            n.parse()
                .unwrap_or_else(|_| panic!("line {line}: bad outcome {n:?}")),
        ),
    }
}

fn parse(text: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.trim();
        if raw.is_empty() || raw.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = raw.split_whitespace().collect();
        assert!(f.len() >= 8, "line {line}: expected at least 8 fields");
        let steps = f[7..]
            .iter()
            .map(|s| {
                let (lhs, expect) = s
                    .split_once('=')
                    .unwrap_or_else(|| panic!("line {line}: step {s:?} has no '='"));
                let (o, intact) = lhs
                    .split_once('/')
                    .unwrap_or_else(|| panic!("line {line}: step {s:?} has no '/'"));
                Step {
                    outcome: outcome(o, line),
                    intact: flag(intact, "intact", line),
                    expect: expect.to_string(),
                }
            })
            .collect();
        cases.push(Case {
            name: f[0].to_string(),
            site: f[1].to_string(),
            max_attempts: f[2].parse().expect("max_attempts"),
            exhausted: match f[3] {
                "open" => false,
                "exhausted" => true,
                other => panic!("line {line}: budget must be open or exhausted, got {other:?}"),
            },
            method: f[4].to_string(),
            key: flag(f[5], "idempotency_key", line),
            replayable: flag(f[6], "replayable", line),
            steps,
        });
    }
    cases
}

fn name(d: &Decision) -> String {
    match d {
        Decision::Done(_) => "done".to_string(),
        Decision::Retry(_, r) => format!("retry:{}", r.as_str()),
        Decision::GiveUp(r) => format!("giveup:{}", r.as_str()),
    }
}

fn run(case: &Case) -> Vec<Event> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let mut b = Balancer::builder()
        .site(&case.site)
        .health_check(false)
        .max_attempts(case.max_attempts)
        .on_event(move |e| sink.lock().unwrap().push(e.clone()));
    if case.exhausted {
        b = b.retry_budget(0.0, 0);
    }
    let balancer = b.build().unwrap();
    let idempotent = retry::is_idempotent_method(&case.method, case.key);
    let mut attempts = balancer.attempts(idempotent, case.replayable);
    let mut lease = Some(attempts.pick().unwrap());
    for (i, step) in case.steps.iter().enumerate() {
        let current = lease
            .take()
            .unwrap_or_else(|| panic!("{}: step {} has no lease", case.name, i + 1));
        let d = attempts.decide(current, step.outcome, step.intact);
        assert_eq!(name(&d), step.expect, "{}: step {}", case.name, i + 1);
        match d {
            Decision::Retry(next, _) => {
                assert!(
                    !attempts.tried().contains(&next.id()),
                    "{}: retried on a tried endpoint",
                    case.name
                );
                lease = Some(next);
            }
            Decision::Done(done) => done.finish(step.outcome),
            Decision::GiveUp(_) => {}
        }
    }
    assert!(lease.is_none(), "{}: steps left a retry open", case.name);
    assert_eq!(attempts.attempts() as usize, case.steps.len());
    let seen = events.lock().unwrap().clone();
    seen
}

#[tokio::test]
async fn every_vector_decides_as_written() {
    let cases = parse(VECTORS);
    assert!(cases.len() >= 25, "only {} vectors", cases.len());
    for case in &cases {
        let events = run(case);
        // One retry event per retry, one budget event per refusal by the budget.
        let retries = case
            .steps
            .iter()
            .filter(|s| s.expect.starts_with("retry:"))
            .count();
        let refused = case
            .steps
            .iter()
            .filter(|s| s.expect == "giveup:budget-exhausted")
            .count();
        let retry_events = events
            .iter()
            .filter(|e| matches!(e, Event::Retry { .. }))
            .count();
        let budget_events = events
            .iter()
            .filter(|e| matches!(e, Event::BudgetExhausted { .. }))
            .count();
        assert_eq!(retry_events, retries, "{}: retry events", case.name);
        assert_eq!(budget_events, refused, "{}: budget events", case.name);
    }
    println!("attempt policy vectors: {} passed", cases.len());
}

#[tokio::test]
async fn the_budget_is_shared_by_the_balancers_callers() {
    // min_per_sec 1 over the 10 s window: ten retries for everyone, then none. (Many endpoints:
    // the resets eject some, within the bound, and every request still finds two.)
    let balancer = Balancer::builder()
        .site("http://127.0.0.1:{9001...9020}")
        .health_check(false)
        .retry_budget(0.0, 1)
        .build()
        .unwrap();
    let mut granted = 0;
    for _ in 0..15 {
        let mut attempts = balancer.attempts(true, true);
        let lease = attempts.pick().unwrap();
        match attempts.decide(lease, Outcome::Reset, false) {
            Decision::Retry(next, _) => {
                granted += 1;
                next.finish(Outcome::Status(200));
            }
            Decision::GiveUp(why) => assert_eq!(why.as_str(), "budget-exhausted"),
            Decision::Done(_) => panic!("a reset is never done"),
        }
    }
    assert_eq!(granted, 10);
}

//! The table of options by name: set from text or typed values, read back from the builder and
//! from the running balancer, and errors that name the option.

use std::time::Duration;

use sidekick::options::{self, Kind, Value};
use sidekick::Balancer;

#[tokio::test]
async fn options_set_by_name_read_back_from_the_balancer() {
    let balancer = Balancer::builder()
        .site("http://127.0.0.1:{9001...9002}")
        .option("health_check", "off")
        .and_then(|b| b.option("health_interval", "250ms"))
        .and_then(|b| b.option("eject_statuses", "500-502,429"))
        .and_then(|b| b.option("policy", "least"))
        .and_then(|b| b.option("attempt_timeout", "1.5s"))
        .and_then(|b| b.set("max_ejected_share", Value::Number(0.25)))
        .and_then(|b| b.set("retry_buffer", Value::Int(1024)))
        .expect("valid options")
        .build()
        .expect("builds");
    let get = |n: &str| balancer.option(n).expect("known option");
    assert_eq!(get("health_check"), Value::Bool(false));
    assert_eq!(
        get("health_interval"),
        Value::Duration(Duration::from_millis(250))
    );
    assert_eq!(
        get("eject_statuses"),
        Value::Statuses(vec![500, 501, 502, 429])
    );
    assert_eq!(get("policy"), Value::Text("least".into()));
    assert_eq!(
        get("attempt_timeout"),
        Value::Duration(Duration::from_millis(1500))
    );
    assert_eq!(get("max_ejected_share"), Value::Number(0.25));
    assert_eq!(get("retry_buffer"), Value::Int(1024));
    // Untouched options keep the table's default.
    let listed = balancer.options();
    assert_eq!(listed.len(), options::all().len());
    for (name, value) in listed {
        let o = options::find(name).expect("listed options are known");
        let touched = [
            "health_check",
            "health_interval",
            "eject_statuses",
            "policy",
            "attempt_timeout",
            "max_ejected_share",
            "retry_buffer",
        ];
        if !touched.contains(&name) {
            assert_eq!(value, o.default(), "{name}");
        }
    }
    // The policy the balancer reports through its own accessor agrees.
    assert_eq!(balancer.host_policy(), sidekick::HostPolicy::Keep);
    assert_eq!(get("host_policy"), Value::Text("keep".into()));
}

#[tokio::test]
async fn build_names_the_option_whose_value_is_out_of_range() {
    let err = Balancer::builder()
        .site("http://127.0.0.1:9001")
        .option("health_jitter", "11")
        .expect("a number")
        .build()
        .expect_err("jitter above 10");
    assert!(err.is_config());
    assert!(err.to_string().contains("health_jitter"), "{err}");
    let err = Balancer::builder()
        .option("healthy_statuses", "700")
        .expect("a status list")
        .site("http://127.0.0.1:9001")
        .build()
        .expect_err("700 is no status");
    assert!(err.to_string().contains("healthy_statuses"), "{err}");
}

#[test]
fn every_option_has_a_kind_a_doc_and_a_default_of_that_kind() {
    for o in options::all() {
        let fits = match (o.kind(), o.default()) {
            (Kind::Bool, Value::Bool(_)) => true,
            (Kind::Count | Kind::Size, Value::Int(_)) => true,
            (Kind::Number, Value::Number(_)) => true,
            (Kind::Duration, Value::Duration(_)) => true,
            (Kind::Statuses, Value::Statuses(_)) => true,
            (Kind::Text | Kind::Policy | Kind::HostPolicy, Value::Text(_)) => true,
            (k, Value::None) => k.is_optional(),
            (Kind::OptionalDuration, Value::Duration(_)) => true,
            (Kind::Port, Value::Int(_)) => true,
            (Kind::OptionalText, Value::Text(_)) => true,
            _ => false,
        };
        assert!(
            fits,
            "{}: {:?} default {:?}",
            o.name(),
            o.kind(),
            o.default()
        );
        assert!(!o.doc().is_empty(), "{}", o.name());
    }
    let err = Balancer::builder()
        .option("max_attempt", "2")
        .expect_err("misspelt");
    assert!(
        err.to_string().contains("did you mean `max_attempts`"),
        "{err}"
    );
}

//! The check runner and the plan, with checks made up for the purpose.

use super::*;
use crate::filter::FactUse;
use futures::channel::oneshot;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// A check whose answer the test decides.
struct Fake {
    name: &'static str,
    facts: Vec<String>,
    earliest: Stage,
    answer: Answer,
    runs: AtomicUsize,
}

enum Answer {
    Facts(Vec<(String, Value)>),
    Fails,
    Hangs,
    /// Waits until the other check signals: it can only finish when both
    /// run at once.
    WaitsFor(Mutex<Option<oneshot::Receiver<()>>>),
    Signals(Mutex<Option<oneshot::Sender<()>>>),
}

impl Check for Fake {
    fn name(&self) -> &'static str {
        self.name
    }
    fn facts(&self) -> &[String] {
        &self.facts
    }
    fn earliest(&self) -> Stage {
        self.earliest
    }
    fn run<'a>(&'a self, _ctx: &'a Context, _message: Option<&'a [u8]>) -> CheckFuture<'a> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            match &self.answer {
                Answer::Facts(f) => Ok(f.clone()),
                Answer::Fails => Err("server said SERVFAIL".to_string()),
                Answer::Hangs => futures::future::pending().await,
                Answer::WaitsFor(rx) => {
                    let rx = rx.lock().unwrap().take().unwrap();
                    rx.await.map_err(|_| "never signalled".to_string())?;
                    Ok(vec![("a".into(), Value::text("done"))])
                }
                Answer::Signals(tx) => {
                    // Yield first, so a sequential runner would be stuck in
                    // the other check before this one starts.
                    async_std::task::yield_now().await;
                    let _ = tx.lock().unwrap().take().unwrap().send(());
                    Ok(vec![("b".into(), Value::text("done"))])
                }
            }
        })
    }
}

fn fake(name: &'static str, facts: &'static [&'static str], answer: Answer) -> Arc<Fake> {
    Arc::new(Fake {
        name,
        facts: facts.iter().map(|f| f.to_string()).collect(),
        earliest: Stage::Connect,
        answer,
        runs: AtomicUsize::new(0),
    })
}

fn settings(timeout_ms: u64, on_error: OnError) -> CheckSettings {
    CheckSettings {
        timeout_ms,
        on_error,
    }
}

fn uses(facts: &[(&str, Stage)]) -> Vec<FactUse> {
    facts
        .iter()
        .map(|(f, s)| FactUse {
            fact: f.to_string(),
            stage: *s,
            file: "rules/10.yaml".into(),
            line: Some(4),
            path: "rules[0].when.fact".into(),
        })
        .collect()
}

fn ctx() -> Context {
    Context::new("192.0.2.7:2525".parse().unwrap())
}

fn run(plan: &Plan, stage: Stage, ctx: &mut Context, fixtures: &Fixtures) -> Option<Reply> {
    async_std::task::block_on(run_stage(plan, stage, ctx, None, fixtures, &Metrics::new()))
}

#[test]
fn only_checks_a_rule_reads_are_planned_at_the_first_stage_that_reads_them() {
    let a = fake("a", &["a", "a.name"], Answer::Fails);
    let b = fake("b", &["b"], Answer::Fails);
    let registry = Registry::with(vec![
        (a as Arc<dyn Check>, CheckSettings::default()),
        (b as Arc<dyn Check>, CheckSettings::default()),
    ]);
    let plan = Plan::new(
        &registry,
        &uses(&[("a.name", Stage::Rcpt), ("a", Stage::Mail)]),
    )
    .unwrap();
    assert_eq!(plan.entries(), vec![(Stage::Mail, "a")]);
    assert!(Plan::new(&registry, &[]).unwrap().is_empty());
}

#[test]
fn a_fact_no_check_gives_or_read_too_early_is_a_load_error_with_its_place() {
    let mut late = fake("late", &["late"], Answer::Fails);
    Arc::get_mut(&mut late).unwrap().earliest = Stage::Mail;
    let registry = Registry::with(vec![(late as Arc<dyn Check>, CheckSettings::default())]);
    let e = Plan::new(&registry, &uses(&[("nope", Stage::Mail)]))
        .err()
        .unwrap();
    assert_eq!(
        e.to_string(),
        "rules/10.yaml:4: rules[0].when.fact: no check gives the fact `nope` (known facts: late)"
    );
    let e = Plan::new(&registry, &uses(&[("late", Stage::Helo)]))
        .err()
        .unwrap();
    assert!(
        e.reason
            .contains("the fact `late` is known from the mail stage on, not at helo"),
        "{e}"
    );
}

#[test]
fn facts_are_recorded_and_a_known_fact_is_not_looked_up_again() {
    let a = fake(
        "a",
        &["a"],
        Answer::Facts(vec![("a".into(), Value::text("pass"))]),
    );
    let registry = Registry::with(vec![(
        a.clone() as Arc<dyn Check>,
        CheckSettings::default(),
    )]);
    let plan = Plan::new(&registry, &uses(&[("a", Stage::Mail)])).unwrap();
    let mut c = ctx();
    assert_eq!(run(&plan, Stage::Mail, &mut c, &Fixtures::default()), None);
    assert_eq!(c.facts.get("a"), Some(&Value::text("pass")));
    assert_eq!(c.checks.len(), 1);
    assert_eq!(c.checks[0].outcome, "ok");
    // A check that can run at connect gives facts about the connection:
    // the next transaction does not look again.
    c.reset_transaction();
    run(&plan, Stage::Mail, &mut c, &Fixtures::default());
    assert_eq!(a.runs.load(Ordering::SeqCst), 1);
    assert_eq!(c.facts.get("a"), Some(&Value::text("pass")));
}

#[test]
fn a_failed_check_says_temperror_and_its_policy_decides_the_reply() {
    for (policy, refused) in [(OnError::FailOpen, false), (OnError::Tempfail, true)] {
        let a = fake("a", &["a", "a.name"], Answer::Fails);
        let registry = Registry::with(vec![(a as Arc<dyn Check>, settings(1000, policy))]);
        let plan = Plan::new(&registry, &uses(&[("a", Stage::Connect)])).unwrap();
        let mut c = ctx();
        let reply = run(&plan, Stage::Connect, &mut c, &Fixtures::default());
        assert_eq!(c.facts.get("a"), Some(&Value::text(TEMPERROR)));
        assert_eq!(c.facts.get("a.name"), Some(&Value::text(TEMPERROR)));
        assert_eq!(c.checks[0].outcome, "error");
        assert_eq!(c.checks[0].error.as_deref(), Some("server said SERVFAIL"));
        if refused {
            let r = reply.unwrap();
            assert_eq!(
                (r.code, r.enhanced),
                (451, Some(EnhancedCode::new(4, 7, 1)))
            );
            assert_eq!(c.decided_by.as_deref(), Some("check:a"));
        } else {
            assert_eq!(reply, None);
        }
    }
}

#[test]
fn a_check_that_never_answers_times_out_as_temperror() {
    let a = fake("a", &["a"], Answer::Hangs);
    let registry = Registry::with(vec![(a as Arc<dyn Check>, settings(50, OnError::FailOpen))]);
    let plan = Plan::new(&registry, &uses(&[("a", Stage::Connect)])).unwrap();
    let mut c = ctx();
    assert_eq!(
        run(&plan, Stage::Connect, &mut c, &Fixtures::default()),
        None
    );
    assert_eq!(c.facts.get("a"), Some(&Value::text(TEMPERROR)));
    assert_eq!(c.checks[0].outcome, "timeout");
}

#[test]
fn checks_of_one_stage_run_at_the_same_time() {
    // The first check can finish only once the second has run: in turn,
    // the first would time out waiting.
    let (tx, rx) = oneshot::channel();
    let a = fake("a", &["a"], Answer::WaitsFor(Mutex::new(Some(rx))));
    let b = fake("b", &["b"], Answer::Signals(Mutex::new(Some(tx))));
    let registry = Registry::with(vec![
        (a as Arc<dyn Check>, settings(10_000, OnError::FailOpen)),
        (b as Arc<dyn Check>, settings(10_000, OnError::FailOpen)),
    ]);
    let plan = Plan::new(
        &registry,
        &uses(&[("a", Stage::Connect), ("b", Stage::Connect)]),
    )
    .unwrap();
    let mut c = ctx();
    run(&plan, Stage::Connect, &mut c, &Fixtures::default());
    assert_eq!(c.facts.get("a"), Some(&Value::text("done")));
    assert_eq!(c.facts.get("b"), Some(&Value::text("done")));
}

#[test]
fn fixtures_stand_in_for_the_lookup() {
    let a = fake("a", &["a", "a.name"], Answer::Fails);
    let registry = Registry::with(vec![(
        a.clone() as Arc<dyn Check>,
        CheckSettings::default(),
    )]);
    let plan = Plan::new(&registry, &uses(&[("a", Stage::Connect)])).unwrap();
    let mut c = ctx();
    let fixtures = Fixtures(vec![("a".into(), Value::text("fail"))]);
    run(&plan, Stage::Connect, &mut c, &fixtures);
    assert_eq!(a.runs.load(Ordering::SeqCst), 0);
    assert_eq!(c.facts.get("a"), Some(&Value::text("fail")));
    assert_eq!(c.checks[0].outcome, "fixture");
}

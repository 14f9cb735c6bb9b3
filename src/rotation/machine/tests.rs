//! The transition table, case by case, and a simulated world that crashes the protocol at
//! every write and checks invariant 1 afterwards. No I/O.

use std::collections::BTreeSet;

use super::*;
use crate::state::Key;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

const NOW: &str = "2026-03-01T12:00:00Z";

fn now() -> DateTime<Utc> {
    at(NOW)
}

fn hours(h: i64) -> TimeDelta {
    TimeDelta::hours(h)
}

fn rules() -> Rules<'static> {
    Rules {
        now: now(),
        grace: hours(1),
        alternates: false,
        digest: "d1",
        in_config: true,
        next_due: Some(now() + hours(24)),
        fresh_id: "fresh",
        jitter: 0.0,
    }
}

/// Idle, established: Vercel holds `h0`, not due for another day.
fn record() -> Record {
    let mut r = Record::new(
        Key {
            policy: "p".into(),
            resource: "r".into(),
        },
        "acme",
        now() - hours(100),
        now() + hours(24),
    );
    r.current_handle = Some("h0".into());
    r
}

fn with_step(step: Step) -> Record {
    let mut r = record();
    r.step = step;
    r
}

fn creating(earlier: Option<&str>) -> Step {
    Step::Creating {
        rotation_id: "rot".into(),
        earlier: earlier.map(str::to_owned),
    }
}

fn created(handle: &str) -> Step {
    Step::Created {
        rotation_id: "rot".into(),
        handle: handle.into(),
        supersedes: None,
    }
}

fn pushing(handle: &str) -> Step {
    Step::Pushing {
        rotation_id: "rot".into(),
        handle: handle.into(),
        supersedes: None,
    }
}

fn pushed(handle: &str) -> Step {
    Step::Pushed {
        rotation_id: "rot".into(),
        handle: handle.into(),
        at: now() - hours(2),
        fingerprint: "f1".into(),
    }
}

fn create(id: &str, previous: Option<&str>) -> Option<Action> {
    Some(Action::Create {
        rotation_id: id.into(),
        previous_handle: previous.map(str::to_owned),
    })
}

fn retire(handle: &str) -> Option<Action> {
    Some(Action::Retire {
        handle: handle.into(),
    })
}

fn retiring(r: &mut Record, handle: &str, due: DateTime<Utc>) {
    r.retirements.push(Retirement::new(handle.into(), due));
}

fn fault(transient: bool, may_have_applied: bool) -> Event {
    Event::Failed(Fault {
        message: "boom".into(),
        transient,
        may_have_applied,
    })
}

/// What a case expects; `None` fields are not checked.
#[derive(Default)]
struct Want {
    step: Option<Step>,
    write: Option<Write>,
    action: Option<Option<Action>>,
    /// (handle, due) of every pending retirement, in order.
    retirements: Option<Vec<(&'static str, DateTime<Utc>)>>,
    current: Option<Option<&'static str>>,
    finished: Option<Option<Finished>>,
}

fn check(what: &str, t: &Transition, want: &Want) {
    if let Some(step) = &want.step {
        assert_eq!(&t.record.step, step, "{what}: step");
    }
    if let Some(write) = want.write {
        assert_eq!(t.write, write, "{what}: write");
    }
    if let Some(action) = &want.action {
        assert_eq!(&t.action, action, "{what}: action");
    }
    if let Some(retirements) = &want.retirements {
        let got: Vec<(&str, DateTime<Utc>)> = t
            .record
            .retirements
            .iter()
            .map(|x| (x.handle.as_str(), x.due))
            .collect();
        assert_eq!(&got, retirements, "{what}: retirements");
    }
    if let Some(current) = &want.current {
        assert_eq!(
            t.record.current_handle.as_deref(),
            *current,
            "{what}: current"
        );
    }
    if let Some(finished) = &want.finished {
        assert_eq!(&t.finished, finished, "{what}: finished");
    }
}

#[test]
fn wake_starts_redoes_or_finishes_rotations() {
    let wake = Event::Wake {
        force: false,
        grace: None,
    };
    let forced = Event::Wake {
        force: true,
        grace: None,
    };
    let stopped = |digest: &str| {
        let mut r = record();
        r.next_due = Some(now() - hours(1));
        r.stopped = Some(Box::new(Stopped {
            at: now() - hours(5),
            reason: "401".into(),
            policy_digest: digest.into(),
        }));
        r
    };
    let due = || {
        let mut r = record();
        r.next_due = Some(now() - hours(1));
        r
    };
    let cases: Vec<(&str, Record, Event, Want)> = vec![
        (
            "idle, not due: nothing",
            record(),
            wake.clone(),
            Want {
                action: Some(None),
                write: Some(Write::None),
                ..Want::default()
            },
        ),
        (
            "idle and due: a fresh rotation, recorded before create",
            due(),
            wake.clone(),
            Want {
                step: Some(Step::Creating {
                    rotation_id: "fresh".into(),
                    earlier: None,
                }),
                write: Some(Write::Durable),
                action: Some(create("fresh", Some("h0"))),
                ..Want::default()
            },
        ),
        (
            "forced: a rotation whatever the schedule",
            record(),
            forced.clone(),
            Want {
                action: Some(create("fresh", Some("h0"))),
                ..Want::default()
            },
        ),
        (
            "a retry whose time has come",
            {
                let mut r = record();
                r.retry_at = Some(now() - hours(1));
                r
            },
            wake.clone(),
            Want {
                action: Some(create("fresh", Some("h0"))),
                ..Want::default()
            },
        ),
        (
            "stopped under this config: nothing",
            stopped("d1"),
            wake.clone(),
            Want {
                action: Some(None),
                ..Want::default()
            },
        ),
        (
            "stopped, but forced",
            stopped("d1"),
            forced.clone(),
            Want {
                action: Some(create("fresh", Some("h0"))),
                ..Want::default()
            },
        ),
        (
            "stopped under an older config: due again",
            stopped("d0"),
            wake.clone(),
            Want {
                action: Some(create("fresh", Some("h0"))),
                ..Want::default()
            },
        ),
        (
            "crashed in creating: redo create with the same id",
            with_step(creating(None)),
            wake.clone(),
            Want {
                step: Some(creating(None)),
                write: Some(Write::Durable),
                action: Some(create("rot", Some("h0"))),
                ..Want::default()
            },
        ),
        (
            "crashed in created: redo, remembering the earlier handle",
            with_step(created("h1")),
            wake.clone(),
            Want {
                step: Some(creating(Some("h1"))),
                action: Some(create("rot", Some("h0"))),
                ..Want::default()
            },
        ),
        (
            "crashed in pushing: the same",
            with_step(pushing("h1")),
            wake.clone(),
            Want {
                step: Some(creating(Some("h1"))),
                action: Some(create("rot", Some("h0"))),
                ..Want::default()
            },
        ),
        (
            "a redo of a redo keeps the earliest handle it knows",
            with_step(creating(Some("h1"))),
            wake.clone(),
            Want {
                step: Some(creating(Some("h1"))),
                action: Some(create("rot", Some("h0"))),
                ..Want::default()
            },
        ),
        (
            "an unfinished rotation waits for its backoff",
            {
                let mut r = with_step(pushing("h1"));
                r.retry_at = Some(now() + hours(1));
                r
            },
            wake.clone(),
            Want {
                step: Some(pushing("h1")),
                action: Some(None),
                ..Want::default()
            },
        ),
        (
            "crashed in pushed: the reminder is (re)sent, nothing written first",
            {
                // The push scheduled h0's retirement at its time plus the grace.
                let mut r = with_step(pushed("h1"));
                retiring(&mut r, "h0", now() - hours(1));
                r
            },
            forced.clone(),
            Want {
                write: Some(Write::None),
                action: Some(Some(Action::Remind {
                    retire_at: Some(now() - hours(1)),
                })),
                ..Want::default()
            },
        ),
        (
            "an older build's notified: settled and reported as this turn's rotation",
            with_step(Step::Notified {
                handle: "h1".into(),
                pushed_at: now() - hours(2),
            }),
            forced.clone(),
            Want {
                step: Some(Step::Idle),
                write: Some(Write::Lazy),
                action: Some(None),
                current: Some(Some("h1")),
                // No retirement is pending for it, so none is promised.
                finished: Some(Some(Finished::Rotated {
                    handle: "h1".into(),
                    fingerprint: "-".into(),
                    pushed_at: now() - hours(2),
                    retire_at: None,
                })),
                ..Want::default()
            },
        ),
    ];
    for (what, record, event, want) in cases {
        check(what, &advance(&record, event, &rules()), &want);
    }
}

#[test]
fn retirements_never_touch_the_rotation() {
    let wake = Event::Wake {
        force: false,
        grace: None,
    };
    let past = now() - hours(1);
    // Issue 10, item 1: a retirement due while a rotation is unfinished (its push may have
    // applied, its retry not yet due) runs beside it; the step, its id and its handle stay.
    let mut r = with_step(pushing("h1"));
    r.retry_at = Some(now() + hours(1));
    retiring(&mut r, "h-old", past);
    let t = advance(&r, wake.clone(), &rules());
    check(
        "a due retirement mid-rotation",
        &t,
        &Want {
            step: Some(pushing("h1")),
            action: Some(retire("h-old")),
            ..Want::default()
        },
    );
    for event in [
        Event::Retired {
            handle: "h-old".into(),
        },
        Event::RetireFailed {
            handle: "h-old".into(),
            message: "down".into(),
        },
    ] {
        let t = advance(&t.record, event.clone(), &rules());
        assert_eq!(t.record.step, pushing("h1"), "{event:?}");
        assert_eq!(t.action, None, "{event:?}");
    }
    // The retired entry is gone; the failed one waits for its backoff.
    let done = advance(
        &t.record,
        Event::Retired {
            handle: "h-old".into(),
        },
        &rules(),
    );
    assert!(done.record.retirements.is_empty());
    let failed = advance(
        &t.record,
        Event::RetireFailed {
            handle: "h-old".into(),
            message: "down".into(),
        },
        &rules(),
    );
    let entry = &failed.record.retirements[0];
    assert_eq!(entry.attempts, 1);
    assert_eq!(entry.retry_at, Some(now() + TimeDelta::seconds(30)));
    assert_eq!(entry.last_error.as_deref(), Some("down"));
    assert_eq!(failed.write, Write::Lazy);

    // An entry naming the credential Vercel holds, or the one the unfinished rotation made,
    // is never acted on, whatever put it there.
    let mut r = with_step(pushing("h1"));
    r.retry_at = Some(now() + hours(1));
    retiring(&mut r, "h0", past);
    retiring(&mut r, "h1", past);
    let t = advance(&r, wake.clone(), &rules());
    assert_eq!(t.action, None);
    assert_eq!(next_wake(&t.record, &rules()), r.retry_at);

    // Several due: one per transition, in order, until none is left.
    let mut r = record();
    retiring(&mut r, "a", past);
    retiring(&mut r, "b", past);
    retiring(&mut r, "c", now() + hours(1));
    let t = advance(&r, wake, &rules());
    assert_eq!(t.action, retire("a"));
    let t = advance(&t.record, Event::Retired { handle: "a".into() }, &rules());
    assert_eq!(t.action, retire("b"));
    let t = advance(&t.record, Event::Retired { handle: "b".into() }, &rules());
    assert_eq!(t.action, None, "c is not due yet");
}

#[test]
fn the_forward_path_records_each_step_before_its_work() {
    let grace_end = now() + hours(1);
    let t = advance(
        &with_step(creating(None)),
        Event::Created {
            handle: "h1".into(),
            supersedes: None,
        },
        &rules(),
    );
    check(
        "created",
        &t,
        &Want {
            step: Some(created("h1")),
            write: Some(Write::Durable),
            action: Some(Some(Action::Prepare)),
            ..Want::default()
        },
    );
    let t = advance(&t.record, Event::Prepared, &rules());
    check(
        "prepared: pushing may be lost in a crash (it recovers like created)",
        &t,
        &Want {
            step: Some(pushing("h1")),
            write: Some(Write::Lazy),
            action: Some(Some(Action::Push)),
            ..Want::default()
        },
    );
    let mut before = t.record.clone();
    before.consecutive_failures = 3;
    before.retry_at = Some(now());
    let t = advance(
        &before,
        Event::Pushed {
            fingerprint: "f9".into(),
        },
        &rules(),
    );
    check(
        "pushed: h1 is current, h0 retires after the grace",
        &t,
        &Want {
            step: Some(Step::Pushed {
                rotation_id: "rot".into(),
                handle: "h1".into(),
                at: now(),
                fingerprint: "f9".into(),
            }),
            write: Some(Write::Durable),
            action: Some(Some(Action::Remind {
                retire_at: Some(grace_end),
            })),
            current: Some(Some("h1")),
            retirements: Some(vec![("h0", grace_end)]),
            ..Want::default()
        },
    );
    assert_eq!(t.record.consecutive_failures, 0);
    assert_eq!(t.record.retry_at, None);
    assert_eq!(t.record.last_success, Some(now()));
    let t = advance(&t.record, Event::Reminded, &rules());
    check(
        "reminded: idle, next due from the schedule",
        &t,
        &Want {
            step: Some(Step::Idle),
            write: Some(Write::Lazy),
            action: Some(None),
            finished: Some(Some(Finished::Rotated {
                handle: "h1".into(),
                fingerprint: "f9".into(),
                pushed_at: now(),
                retire_at: Some(grace_end),
            })),
            ..Want::default()
        },
    );
    assert_eq!(t.record.next_due, Some(now() + hours(24)));
}

#[test]
fn a_first_rotation_promises_no_retirement() {
    // Nothing of this policy was live before: the push replaces nothing, so neither the
    // reminder nor the report may name a retirement time.
    let mut first = with_step(pushing("h1"));
    first.current_handle = None;
    let t = advance(
        &first,
        Event::Pushed {
            fingerprint: "f1".into(),
        },
        &rules(),
    );
    check(
        "first push: nothing to retire",
        &t,
        &Want {
            action: Some(Some(Action::Remind { retire_at: None })),
            current: Some(Some("h1")),
            retirements: Some(vec![]),
            ..Want::default()
        },
    );
    let t = advance(&t.record, Event::Reminded, &rules());
    assert_eq!(
        t.finished,
        Some(Finished::Rotated {
            handle: "h1".into(),
            fingerprint: "f1".into(),
            pushed_at: now(),
            retire_at: None,
        })
    );

    // A crash after that push: the repeated reminder promises nothing either.
    let mut crashed = with_step(pushed("h1"));
    crashed.current_handle = Some("h1".into());
    let t = advance(
        &crashed,
        Event::Wake {
            force: false,
            grace: None,
        },
        &rules(),
    );
    assert_eq!(t.action, Some(Action::Remind { retire_at: None }));

    // The second rotation replaces h1: its retirement is promised at the push plus the grace.
    let mut second = with_step(pushing("h2"));
    second.current_handle = Some("h1".into());
    let t = advance(
        &second,
        Event::Pushed {
            fingerprint: "f2".into(),
        },
        &rules(),
    );
    assert_eq!(
        t.action,
        Some(Action::Remind {
            retire_at: Some(now() + hours(1))
        })
    );
}

#[test]
fn created_handles_and_earlier_tries() {
    let grace_end = now() + hours(1);
    let created_event = |h: &str| Event::Created {
        handle: h.into(),
        supersedes: None,
    };
    type Case = (
        &'static str,
        Record,
        Event,
        Vec<(&'static str, DateTime<Utc>)>,
    );
    let cases: Vec<Case> = vec![
        (
            "a redo that makes another credential: the earlier one gets its grace",
            with_step(creating(Some("h1"))),
            created_event("h2"),
            vec![("h1", grace_end)],
        ),
        (
            "a redo that replaced what the id made: nothing to retire",
            with_step(creating(Some("h1"))),
            created_event("h1"),
            vec![],
        ),
        (
            "a handle reused while waiting to retire (the idle user of a pair): not retired",
            {
                let mut r = with_step(creating(None));
                retiring(&mut r, "b", now() - hours(1));
                r
            },
            created_event("b"),
            vec![],
        ),
    ];
    for (what, record, event, want) in cases {
        let t = advance(&record, event, &rules());
        check(
            what,
            &t,
            &Want {
                retirements: Some(want),
                action: Some(Some(Action::Prepare)),
                ..Want::default()
            },
        );
    }
}

#[test]
fn the_first_push_of_a_pair_gives_the_other_user_its_grace() {
    // Issue 10, item 18: nothing was current, but the provider knows whom it replaced.
    let mut r = with_step(Step::Pushing {
        rotation_id: "rot".into(),
        handle: "a".into(),
        supersedes: Some("b".into()),
    });
    r.current_handle = None;
    let alternating = Rules {
        alternates: true,
        ..rules()
    };
    let t = advance(
        &r,
        Event::Pushed {
            fingerprint: "f".into(),
        },
        &alternating,
    );
    assert_eq!(t.record.current_handle.as_deref(), Some("a"));
    let grace_end = now() + hours(1);
    assert_eq!(t.record.retirements.len(), 1);
    assert_eq!(t.record.retirements[0].handle, "b");
    assert_eq!(t.record.retirements[0].due, grace_end);
    // A forced rotation right after is held back until b's grace is over.
    let t = advance(&t.record, Event::Reminded, &alternating);
    let t = advance(
        &t.record,
        Event::Wake {
            force: true,
            grace: None,
        },
        &alternating,
    );
    assert_eq!(t.action, None);
    assert_eq!(t.finished, Some(Finished::Held { until: grace_end }));
    // Once it is over: b retires in the same turn as... no: the rotation comes first and
    // takes b (whose old credential `create` then replaces).
    let later = Rules {
        now: grace_end + TimeDelta::seconds(1),
        ..alternating
    };
    let t = advance(
        &t.record,
        Event::Wake {
            force: true,
            grace: None,
        },
        &later,
    );
    assert_eq!(t.action, create("fresh", Some("a")));
}

#[test]
fn failures_keep_or_retire_what_was_made() {
    let now = now();
    let transient_retry = now + TimeDelta::seconds(30);
    let cases: Vec<(&str, Step, Event, Want)> = vec![
        (
            "create failed: the id is kept for the retry",
            creating(None),
            fault(true, false),
            Want {
                step: Some(creating(None)),
                write: Some(Write::Durable),
                retirements: Some(vec![]),
                action: Some(None),
                ..Want::default()
            },
        ),
        (
            "verify or render failed: nothing was sent, the new credential retires at once",
            created("h1"),
            fault(true, false),
            Want {
                step: Some(Step::Idle),
                retirements: Some(vec![("h1", now)]),
                action: Some(retire("h1")),
                current: Some(Some("h0")),
                ..Want::default()
            },
        ),
        (
            "a definite refusal: the same",
            pushing("h1"),
            fault(false, false),
            Want {
                step: Some(Step::Idle),
                retirements: Some(vec![("h1", now)]),
                action: Some(retire("h1")),
                ..Want::default()
            },
        ),
        (
            "a push that may have applied: the new credential stays, the retry redoes create",
            pushing("h1"),
            fault(true, true),
            Want {
                step: Some(pushing("h1")),
                retirements: Some(vec![]),
                action: Some(None),
                current: Some(Some("h0")),
                ..Want::default()
            },
        ),
    ];
    for (what, step, event, want) in cases {
        let t = advance(&with_step(step), event, &rules());
        check(what, &t, &want);
    }

    // Transient: backoff from the failure count; permanent: stopped under this digest.
    let t = advance(&with_step(pushing("h1")), fault(true, true), &rules());
    assert_eq!(t.record.consecutive_failures, 1);
    assert_eq!(t.record.retry_at, Some(transient_retry));
    assert_eq!(t.record.last_error.as_ref().unwrap().step, "pushing");
    assert!(t.record.stopped.is_none());
    assert_eq!(next_wake(&t.record, &rules()), Some(transient_retry));
    let t = advance(&with_step(pushing("h1")), fault(false, true), &rules());
    assert_eq!(t.record.retry_at, None);
    assert_eq!(t.record.stopped.as_ref().unwrap().policy_digest, "d1");
    assert_eq!(next_wake(&t.record, &rules()), None, "stopped, nothing due");
    // An idle rotation that failed waits for its retry, not the missed due time.
    let mut r = record();
    r.next_due = Some(now - hours(1));
    let t = advance(
        &r,
        Event::Wake {
            force: false,
            grace: None,
        },
        &rules(),
    );
    let t = advance(
        &t.record,
        Event::Created {
            handle: "h1".into(),
            supersedes: None,
        },
        &rules(),
    );
    let t = advance(&t.record, fault(true, false), &rules());
    let t = advance(
        &t.record,
        Event::Retired {
            handle: "h1".into(),
        },
        &rules(),
    );
    assert_eq!(next_wake(&t.record, &rules()), Some(transient_retry));
}

#[test]
fn events_that_do_not_fit_the_step_change_nothing() {
    for (step, event) in [
        (Step::Idle, Event::Prepared),
        (
            Step::Idle,
            Event::Pushed {
                fingerprint: "f".into(),
            },
        ),
        (Step::Idle, Event::Reminded),
        (
            pushing("h1"),
            Event::Created {
                handle: "x".into(),
                supersedes: None,
            },
        ),
    ] {
        let r = with_step(step);
        let t = advance(&r, event.clone(), &rules());
        assert_eq!(t.record, r, "{event:?}");
        assert_eq!(t.write, Write::None, "{event:?}");
    }
}

#[test]
fn records_the_config_no_longer_names_only_finish_and_retire() {
    let gone = Rules {
        in_config: false,
        ..rules()
    };
    let mut r = record();
    r.next_due = Some(now() - hours(1));
    let t = advance(
        &r,
        Event::Wake {
            force: true,
            grace: None,
        },
        &gone,
    );
    assert_eq!(t.action, None, "never a rotation");
    retiring(&mut r, "h-old", now() - hours(1));
    let t = advance(
        &r,
        Event::Wake {
            force: false,
            grace: None,
        },
        &gone,
    );
    assert_eq!(t.action, retire("h-old"));
    // What reached Vercel is current; no reminder for a policy that is gone.
    let t = advance(
        &with_step(pushed("h1")),
        Event::Wake {
            force: false,
            grace: None,
        },
        &gone,
    );
    assert_eq!(t.record.step, Step::Idle);
    assert_eq!(t.record.current_handle.as_deref(), Some("h1"));
    assert_eq!(t.finished, None);
    // An unfinished rotation is left for `status` (or a successor's push) to resolve.
    let t = advance(
        &with_step(pushing("h1")),
        Event::Wake {
            force: true,
            grace: None,
        },
        &gone,
    );
    assert_eq!(t.record.step, pushing("h1"));
    assert_eq!(t.action, None);
    assert_eq!(next_wake(&with_step(pushing("h1")), &gone), None);
}

#[test]
fn a_successor_push_supersedes_what_a_renamed_policy_left_live() {
    let grace = hours(1);
    let pushed_at = now();
    let due = pushed_at + grace;
    let mut r = with_step(pushing("h1"));
    retiring(&mut r, "h-old", now() - hours(3));
    let s = supersede(&r, pushed_at, grace).unwrap();
    assert_eq!(s.step, Step::Idle);
    assert_eq!(s.current_handle, None);
    let handles: Vec<(&str, DateTime<Utc>)> = s
        .retirements
        .iter()
        .map(|x| (x.handle.as_str(), x.due))
        .collect();
    assert_eq!(
        handles,
        vec![("h-old", now() - hours(3)), ("h0", due), ("h1", due)]
    );
    assert_eq!(supersede(&s, pushed_at, grace), None, "idempotent");
    assert!(!can_forget(&s, false), "retirements pending");
    let mut done = s.clone();
    done.retirements.clear();
    assert!(can_forget(&done, true));
    // Vercel's credential of a removed resource: forget it, unless a push will replace it.
    let idle = record();
    assert!(can_forget(&idle, false));
    assert!(!can_forget(&idle, true));
}

#[test]
fn next_wake_follows_the_protocol() {
    let soon = DateTime::<Utc>::MIN_UTC;
    let due = now() + hours(24);
    let retry = now() + hours(2);
    let alternating = Rules {
        alternates: true,
        ..rules()
    };
    let cases: Vec<(&str, Record, Rules, Option<DateTime<Utc>>)> = vec![
        ("idle waits for its due time", record(), rules(), Some(due)),
        (
            "an unfinished rotation is redone at once",
            with_step(created("h")),
            rules(),
            Some(soon),
        ),
        (
            "pushed is finished at once",
            with_step(pushed("h")),
            rules(),
            Some(soon),
        ),
        (
            "a transient failure waits for its retry",
            {
                let mut r = with_step(pushing("h"));
                r.retry_at = Some(retry);
                r
            },
            rules(),
            Some(retry),
        ),
        (
            "a retirement before the due time comes first",
            {
                let mut r = record();
                retiring(&mut r, "old", retry);
                r
            },
            rules(),
            Some(retry),
        ),
        (
            "a failed retirement waits for its retry",
            {
                let mut r = record();
                retiring(&mut r, "old", retry);
                r.retirements[0].retry_at = Some(retry + hours(1));
                r
            },
            rules(),
            Some(retry + hours(1)),
        ),
        (
            "alternating users wait for the pending retirement",
            {
                let mut r = record();
                r.next_due = Some(now());
                retiring(&mut r, "old", retry);
                r
            },
            alternating,
            Some(retry),
        ),
        (
            "stopped with the same config, nothing to retire: never",
            {
                let mut r = record();
                r.stopped = Some(Box::new(Stopped {
                    at: now(),
                    reason: "401".into(),
                    policy_digest: "d1".into(),
                }));
                r
            },
            rules(),
            None,
        ),
        (
            "stopped still retires old credentials",
            {
                let mut r = record();
                r.stopped = Some(Box::new(Stopped {
                    at: now(),
                    reason: "401".into(),
                    policy_digest: "d1".into(),
                }));
                retiring(&mut r, "old", retry);
                r
            },
            rules(),
            Some(retry),
        ),
        (
            "stopped, but the config changed: due again",
            {
                let mut r = record();
                r.stopped = Some(Box::new(Stopped {
                    at: now(),
                    reason: "401".into(),
                    policy_digest: "d0".into(),
                }));
                r
            },
            rules(),
            Some(due),
        ),
    ];
    for (what, record, rules, want) in cases {
        assert_eq!(next_wake(&record, &rules), want, "{what}");
    }
}

#[test]
fn backoff_doubles_from_a_minute_to_six_hours_with_jitter() {
    for (failures, full) in [(1u32, 60u64), (2, 120), (3, 240), (9, 15_360), (30, 21_600)] {
        let full = Duration::from_secs(full);
        assert_eq!(backoff(failures, 0.0), full / 2);
        assert_eq!(backoff(failures, 1.0), full);
        let mid = backoff(failures, 0.5);
        assert!(mid > full / 2 && mid < full);
    }
}

/// A provider, Vercel and a disk, simulated: the protocol runs through them, crashing after
/// each write in turn (losing lazy writes), with pushes that apply, are refused or leave it
/// unknown. Afterwards, once every grace is over, exactly one credential may be live: the
/// one Vercel holds.
mod world {
    use super::*;

    #[derive(Clone, Copy, Debug)]
    pub enum PushOutcome {
        Applies,
        Refused,
        /// The push applies, but the answer is lost (a dropped connection after handling).
        AppliesUnclear,
        /// The push does not apply and the answer is lost.
        LostUnclear,
    }

    pub struct World {
        /// Handles a provider made live and nobody retired.
        pub live: BTreeSet<String>,
        pub vercel: Option<String>,
        made: u32,
        /// A provider that replaces what a rotation id made (true) or makes a new credential
        /// on every call whatever the id (false, like redis before its fix).
        pub replaces: bool,
        /// Handle per rotation id, for providers that replace.
        by_id: std::collections::BTreeMap<String, String>,
        pub pushes: Vec<PushOutcome>,
    }

    impl World {
        pub fn new(replaces: bool, pushes: Vec<PushOutcome>) -> World {
            World {
                live: BTreeSet::from(["h0".to_owned()]),
                vercel: Some("h0".to_owned()),
                made: 0,
                replaces,
                by_id: Default::default(),
                pushes,
            }
        }

        fn perform(&mut self, action: &Action, pending: &mut Option<String>) -> Event {
            match action {
                Action::Create { rotation_id, .. } => {
                    let handle = match self.by_id.get(rotation_id) {
                        Some(h) if self.replaces => h.clone(),
                        _ => {
                            self.made += 1;
                            format!("c{}", self.made)
                        }
                    };
                    self.by_id.insert(rotation_id.clone(), handle.clone());
                    self.live.insert(handle.clone());
                    *pending = Some(handle.clone());
                    Event::Created {
                        handle,
                        supersedes: None,
                    }
                }
                Action::Prepare => Event::Prepared,
                Action::Push => {
                    let outcome = if self.pushes.is_empty() {
                        PushOutcome::Applies
                    } else {
                        self.pushes.remove(0)
                    };
                    let handle = pending.clone().unwrap();
                    match outcome {
                        PushOutcome::Applies => {
                            self.vercel = Some(handle);
                            Event::Pushed {
                                fingerprint: "f".into(),
                            }
                        }
                        PushOutcome::Refused => fault(false, false),
                        PushOutcome::AppliesUnclear => {
                            self.vercel = Some(handle);
                            fault(true, true)
                        }
                        PushOutcome::LostUnclear => fault(true, true),
                    }
                }
                Action::Remind { .. } => Event::Reminded,
                Action::Retire { handle } => {
                    assert_ne!(
                        self.vercel.as_deref(),
                        Some(handle.as_str()),
                        "retired the credential Vercel holds"
                    );
                    self.live.remove(handle);
                    Event::Retired {
                        handle: handle.clone(),
                    }
                }
            }
        }

        /// Runs turns at `now`; crashes after the `crash_after`-th write (counting from 0), if
        /// any. Returns the record as the disk has it and whether a crash happened.
        pub fn run(
            &mut self,
            disk: &mut Record,
            force: bool,
            now: DateTime<Utc>,
            crash_after: &mut Option<usize>,
        ) -> bool {
            let mut memory = disk.clone();
            let mut event = Event::Wake { force, grace: None };
            let mut pending = None;
            loop {
                let rules = Rules {
                    now,
                    next_due: Some(now + hours(24 * 30)),
                    ..rules()
                };
                let t = advance(&memory, event, &rules);
                memory = t.record.clone();
                if t.write == Write::Durable {
                    *disk = memory.clone();
                }
                if t.write != Write::None
                    && let Some(n) = crash_after
                {
                    if *n == 0 {
                        *crash_after = None;
                        return true;
                    }
                    *n -= 1;
                }
                let Some(action) = t.action else {
                    *disk = memory;
                    return false;
                };
                event = self.perform(&action, &mut pending);
            }
        }
    }
}

#[test]
fn nothing_is_orphaned_whatever_the_crash_and_the_push_outcome() {
    use world::{PushOutcome::*, World};
    let scripts: Vec<Vec<world::PushOutcome>> = vec![
        vec![Applies],
        vec![Refused],
        vec![AppliesUnclear],
        vec![LostUnclear],
        vec![AppliesUnclear, Applies],
        vec![LostUnclear, Refused],
        vec![AppliesUnclear, AppliesUnclear, Applies],
    ];
    let mut runs = 0;
    for replaces in [true, false] {
        for script in &scripts {
            for crash in 0..12 {
                let mut world = World::new(replaces, script.clone());
                let mut disk = record();
                let mut crash_after = Some(crash);
                let mut t = now();
                // Forced turns (with a crash somewhere), then turns until idle.
                for _ in 0..8 {
                    world.run(&mut disk, true, t, &mut crash_after);
                    t += TimeDelta::minutes(1);
                    if disk.step == Step::Idle {
                        break;
                    }
                    // The backoff of a failure: jump past it.
                    if let Some(retry) = disk.retry_at {
                        t = t.max(retry);
                    }
                }
                // Every grace over: retire what is due, as many turns as it takes.
                t += hours(2);
                for _ in 0..8 {
                    world.run(&mut disk, false, t, &mut None);
                    t += hours(7);
                }
                let what = format!("replaces={replaces} {script:?} crash after write {crash}");
                assert_eq!(
                    world.live,
                    BTreeSet::from([world.vercel.clone().unwrap()]),
                    "{what}: live credentials besides Vercel's\n{disk:#?}"
                );
                if disk.step == Step::Idle {
                    assert_eq!(disk.current_handle, world.vercel, "{what}");
                }
                runs += 1;
            }
        }
    }
    assert_eq!(runs, 2 * 7 * 12);
}

#[test]
fn a_requested_grace_survives_a_failed_try_and_sets_the_retirement_time() {
    let requested = TimeDelta::minutes(5);
    let forced = Event::Wake {
        force: true,
        grace: Some(requested),
    };
    let t = advance(&record(), forced, &rules());
    assert_eq!(
        t.write,
        Write::Durable,
        "the request is on disk before create"
    );
    assert_eq!(t.record.requested_grace_ms, Some(300_000));

    // The provider fails transiently: the rotation stays in `creating` and keeps its grace.
    let fault = Fault {
        message: "db down".into(),
        transient: true,
        may_have_applied: false,
    };
    let t = advance(&t.record, Event::Failed(fault), &rules());
    assert_eq!(t.record.requested_grace_ms, Some(300_000));

    // The retry (a scheduled wake, not a new request) goes on with the same grace.
    let mut later = rules();
    later.now = now() + hours(2);
    let t = advance(
        &t.record,
        Event::Wake {
            force: false,
            grace: None,
        },
        &later,
    );
    assert!(matches!(t.record.step, Step::Creating { .. }));
    assert_eq!(t.record.requested_grace_ms, Some(300_000));
    let t = advance(
        &t.record,
        Event::Created {
            handle: "h1".into(),
            supersedes: None,
        },
        &later,
    );
    let t = advance(&t.record, Event::Prepared, &later);
    let t = advance(
        &t.record,
        Event::Pushed {
            fingerprint: "f1".into(),
        },
        &later,
    );
    let old = t
        .record
        .retirements
        .iter()
        .find(|x| x.handle == "h0")
        .unwrap();
    assert_eq!(old.due, later.now + requested, "not the policy's hour");
    assert_eq!(t.record.requested_grace_ms, None, "cleared at the push");
}

#[test]
fn a_manual_run_replaces_an_earlier_requests_grace_and_a_plain_one_uses_the_policys() {
    let t = advance(
        &record(),
        Event::Wake {
            force: true,
            grace: Some(TimeDelta::minutes(5)),
        },
        &rules(),
    );
    let t = advance(
        &t.record,
        Event::Wake {
            force: true,
            grace: None,
        },
        &rules(),
    );
    assert_eq!(t.record.requested_grace_ms, None);
    let t = advance(
        &t.record,
        Event::Created {
            handle: "h1".into(),
            supersedes: None,
        },
        &rules(),
    );
    let t = advance(&t.record, Event::Prepared, &rules());
    let t = advance(
        &t.record,
        Event::Pushed {
            fingerprint: "f1".into(),
        },
        &rules(),
    );
    let old = t
        .record
        .retirements
        .iter()
        .find(|x| x.handle == "h0")
        .unwrap();
    assert_eq!(old.due, now() + hours(1));
}

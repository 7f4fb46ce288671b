//! The queue's bounds and fair claiming through the real writer on a real
//! database: per-user and global bounds refuse without a trace, a user at
//! `processing_per_user_max` is passed over, two backlogs interleave, and a
//! newcomer waits behind at most one job of each backlog (property tests
//! over random schedules).

use super::*;
use crate::domain::{Email, Role};
use crate::storage::{Synchronous, temp_db, test_engines};
use proptest::prelude::*;

/// No per-user bound on processing: claims then go by turn alone.
const ANY: usize = usize::MAX >> 1;

fn user(db: &Db, name: &str) -> UserId {
    let email = Email::parse(&format!("{name}@example.com")).unwrap();
    db.write(move |c| Ok::<_, Error>(crate::users::insert(c, &email, "x", Role::User)?.id)).unwrap()
}

fn bounds(queue_max: usize, queued_per_user_max: usize) -> QueueBounds {
    QueueBounds { queue_max, queued_per_user_max }
}

fn queue(db: &Db, user: UserId, b: QueueBounds) -> Result<JobId> {
    let c = Create {
        user,
        jtype: JobType::Text,
        model: "m".into(),
        input: json!({"prompt": "x"}),
        bound: Credits::ZERO,
        max_attempts: 3,
        bounds: b,
        hold_ttl_ms: 60_000,
        caps: ledger::SpendCaps::NONE,
    };
    db.write(move |conn| create(conn, &c)).map(|v| JobId::parse(v["id"].as_str().unwrap()).unwrap())
}

/// Claims the next job as a worker would: (job, its user).
fn claim(db: &Db, per_user: usize) -> Option<(JobId, UserId)> {
    let now = Timestamp::now();
    db.write(move |c| storage::claim_due(c, now, now.plus_ms(60_000), per_user)).unwrap().map(|j| (j.id, j.user))
}

/// Ends a claimed job (failed: it needs no charge).
fn finish(db: &Db, id: JobId) {
    let moved = db
        .write(move |c| storage::set_status(c, id, JobStatus::Processing, JobStatus::Failed, "test", Timestamp::now()))
        .unwrap();
    assert!(moved);
}

fn count_jobs(db: &Db) -> i64 {
    db.read(|c| Ok::<_, Error>(c.query_one("SELECT count(*) FROM jobs", &[], |r| r.get(0))?)).unwrap()
}

#[test]
fn a_user_at_their_bound_is_refused_and_others_still_queue() {
    for (_guard, db) in test_engines() {
        let (ann, bob, cy) = (user(&db, "ann"), user(&db, "bob"), user(&db, "cy"));
        let b = bounds(5, 3);
        for _ in 0..3 {
            queue(&db, ann, b).unwrap();
        }
        let err = queue(&db, ann, b).unwrap_err();
        assert!(matches!(err, Error::TooManyJobs { queued_per_user_max: 3 }), "{err:?}");
        assert_eq!(count_jobs(&db), 3, "a refusal leaves no job");
        queue(&db, bob, b).unwrap();
        queue(&db, bob, b).unwrap();
        let err = queue(&db, cy, b).unwrap_err();
        assert!(matches!(err, Error::QueueFull { queue_max: 5 }), "{err:?}");

        // A retry waits under the same bound as a new job.
        let (first, _) = claim(&db, ANY).unwrap();
        finish(&db, first);
        queue(&db, ann, b).unwrap();
        let retried = db.write(move |c| retry(c, ann, first, &b, 60_000, &ledger::SpendCaps::NONE));
        assert!(matches!(retried, Err(Error::TooManyJobs { .. })), "{retried:?}");
        assert_eq!(count_jobs(&db), 6);
    }
}

#[test]
fn a_user_at_processing_per_user_max_is_passed_over_until_one_ends() {
    for (_guard, db) in test_engines() {
        let (ann, bob) = (user(&db, "ann"), user(&db, "bob"));
        let b = bounds(100, 100);
        let a1 = queue(&db, ann, b).unwrap();
        queue(&db, ann, b).unwrap();
        let b1 = queue(&db, bob, b).unwrap();
        assert_eq!(claim(&db, 1), Some((a1, ann)));
        assert_eq!(claim(&db, 1), Some((b1, bob)), "ann is at her bound: bob's job goes first");
        assert_eq!(claim(&db, 1), None, "both at their bound");
        assert_eq!(db.read(|c| storage::next_due(c, 1)).unwrap(), None, "workers sleep instead of spinning");
        finish(&db, a1);
        assert_eq!(claim(&db, 1).map(|(_, u)| u), Some(ann));
    }
}

/// Queues jobs in `order` (a user index each) before any claim, then claims
/// and ends them one by one: the users of the claims, in order.
fn claim_order(order: &[usize]) -> Vec<usize> {
    let (_dir, db) = temp_db(Synchronous::Normal);
    let users: Vec<UserId> = (0..3).map(|i| user(&db, &format!("u{i}"))).collect();
    for &u in order {
        queue(&db, users[u], bounds(1_000, 1_000)).unwrap();
    }
    let mut claimed = Vec::new();
    while let Some((id, u)) = claim(&db, ANY) {
        finish(&db, id);
        claimed.push(users.iter().position(|x| *x == u).unwrap());
    }
    claimed
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// However their jobs were queued, while two users both have jobs
    /// waiting, neither gets two claims more than the other.
    #[test]
    fn backlogs_interleave(order in prop::collection::vec(0usize..3, 1..40)) {
        let claimed = claim_order(&order);
        prop_assert_eq!(claimed.len(), order.len());
        let total = |u: usize| order.iter().filter(|x| **x == u).count();
        let mut got = [0usize; 3];
        for &u in &claimed {
            got[u] += 1;
            for a in 0..3 {
                for b in 0..3 {
                    let both_waiting = got[a] < total(a) && got[b] < total(b);
                    prop_assert!(!both_waiting || got[a].abs_diff(got[b]) <= 1, "{claimed:?} from {order:?}");
                }
            }
        }
    }

    /// Jobs are queued and claimed in a random schedule. A job queued by a
    /// user with nothing else waiting is claimed before any other user gets
    /// a second claim.
    #[test]
    fn a_newcomer_waits_behind_at_most_one_job_of_each_backlog(
        steps in prop::collection::vec(prop_oneof![(0usize..4).prop_map(Some), Just(None)], 1..60),
    ) {
        let (_dir, db) = temp_db(Synchronous::Normal);
        let users: Vec<UserId> = (0..4).map(|i| user(&db, &format!("u{i}"))).collect();
        let mut waiting = [0usize; 4];
        // Newcomers' jobs not yet claimed: (job, claims per user since it was queued).
        let mut newcomers: Vec<(JobId, [usize; 4])> = Vec::new();
        for step in steps {
            match step {
                Some(u) => {
                    let id = queue(&db, users[u], bounds(1_000, 1_000)).unwrap();
                    if waiting[u] == 0 {
                        newcomers.push((id, [0; 4]));
                    }
                    waiting[u] += 1;
                }
                None => {
                    let Some((id, who)) = claim(&db, ANY) else { continue };
                    finish(&db, id);
                    let u = users.iter().position(|x| *x == who).unwrap();
                    waiting[u] -= 1;
                    newcomers.retain(|(job, _)| *job != id);
                    for (job, seen) in &mut newcomers {
                        seen[u] += 1;
                        prop_assert!(seen[u] <= 1, "job {job} waited behind two claims of user {u}");
                    }
                }
            }
        }
    }
}

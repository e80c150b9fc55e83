//! One DKIM verification per message for both the `dkim` and the `dmarc`
//! check: DMARC needs every signature's result, and verifying each RSA
//! signature twice was most of the data stage's cost.
//!
//! The checks of a stage run concurrently, so the first of the two to ask
//! starts one job on the DNS thread (DKIM, then DMARC over its results,
//! ARC when DMARC needs it) and the other waits for the same job. Jobs are
//! found by a keyed digest of the message and its envelope. Under load one
//! check can finish before the other is first polled, so a finished job's
//! facts are kept for [`KEEP_DONE`] (at most [`MAX_DONE`] of them) and the
//! late check takes them instead of verifying again. A job no check waits
//! for any more is dropped. Each check keeps its own timeout over the wait.

use super::dkim::Verified;
use super::dmarc::{evaluate_both, Envelope, Outcome};
use super::mailauth::on_dns;
use super::SharedResolver;
use crate::config::ArcOptions;
use crate::filter::Context;
use futures::future::{BoxFuture, FutureExt, Shared, WeakShared};
use prometheus::IntCounter;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a finished job's facts serve a check that asks late: far
/// longer than the gap between the two checks of one stage.
pub(super) const KEEP_DONE: Duration = Duration::from_secs(30);

/// At most this many finished jobs are kept (the oldest go first), so a
/// flood of messages cannot grow the table.
pub(super) const MAX_DONE: usize = 4096;

/// What one job finds: the facts of both checks.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Both {
    /// For the `dkim` check.
    pub dkim: Verified,
    /// For the `dmarc` check.
    pub dmarc: Outcome,
}

/// A job before it is shared: its result, or why it could not run.
type Work = BoxFuture<'static, Result<Arc<Both>, String>>;

/// A job, awaited by every check that asks for it.
type Job = Shared<Work>;

/// The jobs running and those finished lately, by key.
#[derive(Default)]
struct Jobs {
    /// Running jobs; weak, so a job no check waits for is gone.
    running: HashMap<u64, WeakShared<Work>>,
    /// Finished jobs' facts.
    done: Done<Arc<Both>>,
}

/// Results kept for [`KEEP_DONE`] after they were found, at most
/// [`MAX_DONE`] of them.
struct Done<T> {
    /// Results and when they were found.
    by_key: HashMap<u64, (Instant, T)>,
    /// Keys of `by_key`, oldest first.
    order: VecDeque<u64>,
}

impl<T> Default for Done<T> {
    fn default() -> Self {
        Done {
            by_key: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<T: Clone> Done<T> {
    /// A result found less than [`KEEP_DONE`] before `now`.
    fn get(&mut self, key: u64, now: Instant) -> Option<T> {
        self.expire(now);
        self.by_key.get(&key).map(|(_, v)| v.clone())
    }

    /// Keeps a result found at `now`.
    fn insert(&mut self, key: u64, value: T, now: Instant) {
        self.expire(now);
        while self.order.len() >= MAX_DONE {
            if let Some(old) = self.order.pop_front() {
                self.by_key.remove(&old);
            }
        }
        if self.by_key.insert(key, (now, value)).is_none() {
            self.order.push_back(key);
        }
    }

    /// Forgets the results kept longer than [`KEEP_DONE`].
    fn expire(&mut self, now: Instant) {
        while let Some(&key) = self.order.front() {
            match self.by_key.get(&key) {
                Some((at, _)) if now.saturating_duration_since(*at) < KEEP_DONE => break,
                _ => {
                    self.order.pop_front();
                    self.by_key.remove(&key);
                }
            }
        }
    }
}

/// The jobs, shared with the jobs themselves (they list their result).
type Running = Arc<Mutex<Jobs>>;

/// The DKIM + DMARC verification both checks share.
pub(super) struct Joint {
    /// The shared resolver.
    resolver: Arc<SharedResolver>,
    /// Our host name, for an SPF lookup of DMARC's own.
    hostname: String,
    /// Whose ARC chains may turn a DMARC failure into a pass.
    arc: ArcOptions,
    /// The jobs running.
    running: Running,
    /// Keys the digests, so no sender can make two messages' keys meet.
    keys: RandomState,
    /// Counts the jobs.
    verifications: IntCounter,
}

/// Forgets a job when it ends or is dropped.
struct Forget {
    /// Where it is listed.
    running: Running,
    /// Its key.
    key: u64,
}

impl Drop for Forget {
    fn drop(&mut self) {
        let mut r = self.running.lock().unwrap_or_else(|e| e.into_inner());
        r.running.remove(&self.key);
    }
}

impl Joint {
    /// The verification over `resolver`; `arc` names the trusted sealers.
    /// `verifications` counts the jobs.
    pub(super) fn new(
        resolver: Arc<SharedResolver>,
        hostname: &str,
        arc: ArcOptions,
        verifications: IntCounter,
    ) -> Joint {
        Joint {
            verifications,
            resolver,
            hostname: hostname.to_string(),
            arc,
            running: Running::default(),
            keys: RandomState::new(),
        }
    }

    /// Both checks' facts for `message` in the transaction `ctx`, from
    /// the job already running for it or a new one.
    pub(super) async fn verify(&self, ctx: &Context, message: &[u8]) -> Result<Arc<Both>, String> {
        let env = Envelope::of(ctx, &self.hostname);
        let key = self.keys.hash_one((message, env.key()));
        let job = {
            let mut r = self.running.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(both) = r.done.get(key, Instant::now()) {
                return Ok(both);
            }
            match r.running.get(&key).and_then(WeakShared::upgrade) {
                Some(job) => job,
                None => {
                    let job = self.start(key, message.to_vec(), env);
                    if let Some(weak) = job.downgrade() {
                        r.running.insert(key, weak);
                    }
                    job
                }
            }
        };
        job.await
    }

    /// A new job (not yet running: the first wait drives it).
    fn start(&self, key: u64, bytes: Vec<u8>, env: Envelope) -> Job {
        let forget = Forget {
            running: self.running.clone(),
            key,
        };
        let resolver = self.resolver.clone();
        let arc = self.arc.clone();
        self.verifications.inc();
        async move {
            let (dkim, dmarc) = on_dns(&resolver, move |auth| {
                Box::pin(async move { evaluate_both(&auth, &bytes, &env, &arc).await })
            })
            .await?;
            let both = Arc::new(Both { dkim, dmarc });
            // Only facts are kept: a failed job (DNS down) is tried again.
            let mut r = forget.running.lock().unwrap_or_else(|e| e.into_inner());
            r.done.insert(forget.key, both.clone(), Instant::now());
            drop(r);
            drop(forget);
            Ok(both)
        }
        .boxed()
        .shared()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_serves_for_keep_done_then_goes() {
        let mut done = Done::default();
        let t0 = Instant::now();
        done.insert(1, "facts", t0);
        assert_eq!(done.get(1, t0 + KEEP_DONE / 2), Some("facts"));
        assert_eq!(done.get(2, t0), None);
        assert_eq!(done.get(1, t0 + KEEP_DONE), None);
        assert!(done.order.is_empty());
    }

    #[test]
    fn at_most_max_done_are_kept_oldest_first_out() {
        let mut done = Done::default();
        let t0 = Instant::now();
        for key in 0..(MAX_DONE as u64 + 10) {
            done.insert(key, key, t0);
        }
        assert_eq!(done.by_key.len(), MAX_DONE);
        assert_eq!(done.order.len(), MAX_DONE);
        assert_eq!(done.get(0, t0), None);
        assert_eq!(done.get(9, t0), None);
        assert_eq!(done.get(10, t0), Some(10));
    }
}

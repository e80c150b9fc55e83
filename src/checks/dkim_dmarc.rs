//! One DKIM verification per message for both the `dkim` and the `dmarc`
//! check: DMARC needs every signature's result, and verifying each RSA
//! signature twice was most of the data stage's cost.
//!
//! The checks of a stage run concurrently, so the first of the two to ask
//! starts one job on the DNS thread (DKIM, then DMARC over its results,
//! ARC when DMARC needs it) and the other waits for the same job. Jobs are
//! found by a keyed digest of the message and its envelope, and forgotten
//! when they end (or when no check waits any more): a check asking later
//! runs a job of its own, which is slower but gives the same facts. Each
//! check keeps its own timeout over the wait.

use super::dkim::Verified;
use super::dmarc::{evaluate_both, Envelope, Outcome};
use super::mailauth::on_dns;
use super::SharedResolver;
use crate::config::ArcOptions;
use crate::filter::Context;
use futures::future::{BoxFuture, FutureExt, Shared, WeakShared};
use prometheus::IntCounter;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

/// What one job finds: the facts of both checks.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Both {
    /// For the `dkim` check.
    pub dkim: Verified,
    /// For the `dmarc` check.
    pub dmarc: Outcome,
}

/// A job's result, or why it could not run.
type Job = Shared<BoxFuture<'static, Result<Arc<Both>, String>>>;

/// The jobs running, by key; weak, so a job no check waits for is gone.
type Running = Arc<Mutex<HashMap<u64, WeakShared<BoxFuture<'static, Result<Arc<Both>, String>>>>>>;

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
        r.remove(&self.key);
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
            match r.get(&key).and_then(WeakShared::upgrade) {
                Some(job) => job,
                None => {
                    let job = self.start(key, message.to_vec(), env);
                    if let Some(weak) = job.downgrade() {
                        r.insert(key, weak);
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
            let _forget = forget;
            let (dkim, dmarc) = on_dns(&resolver, move |auth| {
                Box::pin(async move { evaluate_both(&auth, &bytes, &env, &arc).await })
            })
            .await?;
            Ok(Arc::new(Both { dkim, dmarc }))
        }
        .boxed()
        .shared()
    }
}

//! Greylisting in a session: a `greylist` rule only marks the stage; when
//! the stage would otherwise go on, the session asks the greylisting store
//! about the triplet (rcpt: this recipient; data: every accepted one) and
//! turns a greylisted answer into the stage's `451 4.7.1`. A triplet that
//! passes for the first time counts towards the client network's
//! auto-allowlisting only once the transaction's message was delivered.

use super::Session;
use crate::filter::{Outcome, Stage, Verdict};
use crate::protection::Answer;
use crate::proto::Recipient;
use crate::stream::Stream;
use log::{info, warn};

impl<S: Stream> Session<S> {
    /// The stage's verdict once greylisting had its say: `verdict` itself
    /// unless a `greylist` rule matched, nothing else refused, and the
    /// store says the triplet has not passed yet. With it, how many
    /// triplets passed for the first time: the transaction keeps the count
    /// for [`greylist_delivered`](Self::greylist_delivered).
    pub(super) async fn greylisting(
        &mut self,
        stage: Stage,
        verdict: Verdict,
        rcpt: Option<&Recipient>,
    ) -> (Verdict, u32) {
        let Some(rule) = self.ctx.greylist.take() else {
            return (verdict, 0);
        };
        if verdict.clone().outcome() != Outcome::Proceed {
            return (verdict, 0);
        }
        let rcpts = match rcpt {
            Some(r) => vec![r.clone()],
            None => self.ctx.rcpts.clone(),
        };
        let shared = self.shared.clone();
        let greylist = shared.greylist();
        let sender = self.ctx.mail_from.clone().flatten();
        let triplets = greylist.triplets(self.ctx.client.ip(), sender.as_ref(), &rcpts);
        let keys = || {
            triplets
                .iter()
                .map(|t| t.key())
                .collect::<Vec<_>>()
                .join(" ")
        };
        match greylist.check(&triplets).await {
            Answer::Pass(seen, retried) => {
                info!(
                    "session {} greylisting ({rule}) at {stage}: {} passes ({})",
                    self.id,
                    keys(),
                    seen.name()
                );
                (verdict, retried)
            }
            Answer::FailedOpen => {
                warn!(
                    "session {} greylisting ({rule}) at {stage}: store unavailable, {} not greylisted",
                    self.id,
                    keys()
                );
                (verdict, 0)
            }
            Answer::Greylisted(seen, reply) => {
                info!(
                    "session {} greylisting ({rule}) at {stage}: {} greylisted ({})",
                    self.id,
                    keys(),
                    seen.name()
                );
                self.ctx.decided_by = Some(rule);
                (Verdict::Tempfail(reply), 0)
            }
            Answer::Unavailable(reply) => {
                self.ctx.decided_by = Some(rule);
                (Verdict::Tempfail(reply), 0)
            }
        }
    }

    /// The message of a transaction whose greylisting had `passes` first
    /// passes was delivered: only now do they count towards the client
    /// network's auto-allowlisting.
    pub(super) async fn greylist_delivered(&mut self, passes: u32) {
        if passes > 0 {
            let shared = self.shared.clone();
            shared
                .greylist()
                .delivered(self.ctx.client.ip(), passes)
                .await;
        }
    }
}

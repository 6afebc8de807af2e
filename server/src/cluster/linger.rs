//! Holds back a commit-only AppendEntries briefly, so the next request with entries carries it.
//!
//! When the leader's commit index moves and it has no new entries for a follower, openraft sends
//! that follower an AppendEntries with no entries only to tell it the new commit. Under a steady
//! load the next entries follow within a fraction of a millisecond (the clients answered by that
//! commit send their next appends), and their request carries the same commit or a later one.
//! Each commit-only request costs a write and a read on every node, a wake of each follower's
//! Raft core and an answer back, in the window where the leader answers its clients.
//!
//! [`Lingering`] holds an entry-less request for at most [`COMMIT_NOTICE_LINGER`]:
//! - if the next request starts at the same previous log id, under the same vote, with a commit
//!   at least as far, the held one is dropped: the next one makes every check the held one would
//!   (vote, log match at the same point) and carries its commit;
//! - otherwise (a different point, or the time is up, or the input ended) the held one is sent
//!   as it is, before anything after it.
//!
//! It holds only while holding pays. A notice whose time ran out (the load stopped) puts the
//! stream in sending mode: later notices go at once, so an idle or lightly used cluster's
//! followers learn of commits as soon as before. A notice sent at once that the next request
//! would have covered within the linger puts it back in holding mode.
//!
//! openraft matches answers by the log id they acknowledge, not by count, so a dropped request
//! needs no answer of its own. A stream of one request (a heartbeat) ends at once and its
//! request goes without waiting.

use std::pin::Pin;
use std::task::{Context, Poll};

use openraft::raft::AppendEntriesRequest;
use tokio::time::{Instant, Sleep};
use tokio_stream::Stream;

use super::types::{LogId, TypeConfig, Vote};
use crate::limits::COMMIT_NOTICE_LINGER;

type Request = AppendEntriesRequest<TypeConfig>;

/// A request stream whose commit-only requests wait briefly to be carried by the next one.
pub struct Lingering<S> {
    input: Option<S>,
    /// The entry-less request held back, and when it goes anyway.
    held: Option<(Request, Pin<Box<Sleep>>)>,
    /// A request that arrived behind a held one it does not cover: it goes right after it.
    next: Option<Request>,
    /// Whether entry-less requests are held (see the module documentation).
    holding: bool,
    /// In sending mode, the last notice sent at once: its vote, its point and when it went.
    sent: Option<(Vote, Option<LogId>, Instant)>,
}

impl<S> Lingering<S> {
    /// Wraps openraft's request stream for one target.
    pub fn new(input: S) -> Lingering<S> {
        Lingering {
            input: Some(input),
            held: None,
            next: None,
            holding: true,
            sent: None,
        }
    }

    /// Takes an entry-less `request`: holds it (until `deadline`, the one of a held request it
    /// replaces, so a run of notices cannot hold a commit back longer than the linger), or
    /// hands it back to send now.
    fn notice(&mut self, request: Request, deadline: Option<Pin<Box<Sleep>>>) -> Option<Request> {
        if !self.holding {
            self.sent = Some((request.vote, request.prev_log_id, Instant::now()));
            return Some(request);
        }
        let until = deadline.unwrap_or_else(|| {
            Box::pin(tokio::time::sleep_until(
                Instant::now() + COMMIT_NOTICE_LINGER,
            ))
        });
        self.held = Some((request, until));
        None
    }

    /// Takes a request with entries after any held one was dealt with; in sending mode, goes
    /// back to holding if the last notice sent at once would have been covered in time.
    fn entries(&mut self, request: &Request) {
        if let Some((vote, prev, at)) = self.sent.take()
            && vote == request.vote
            && prev == request.prev_log_id
            && at.elapsed() <= COMMIT_NOTICE_LINGER
        {
            self.holding = true;
        }
    }
}

/// Whether `next` makes every check `held` would and carries its commit.
fn covers(next: &Request, held: &Request) -> bool {
    next.vote == held.vote
        && next.prev_log_id == held.prev_log_id
        && next.leader_commit >= held.leader_commit
}

impl<S> Stream for Lingering<S>
where
    S: Stream<Item = Request> + Unpin,
{
    type Item = Request;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Request>> {
        let this = &mut *self;
        if let Some(next) = this.next.take() {
            return Poll::Ready(Some(next));
        }
        loop {
            let polled = match this.input.as_mut() {
                Some(input) => Pin::new(input).poll_next(cx),
                None => Poll::Ready(None),
            };
            match polled {
                Poll::Ready(Some(request)) => {
                    let deadline = match this.held.take() {
                        Some((held, _)) if !covers(&request, &held) => {
                            this.next = Some(request);
                            return Poll::Ready(Some(held));
                        }
                        // Covered: the held request is dropped.
                        Some((_, until)) => Some(until),
                        None => None,
                    };
                    if request.entries.is_empty() {
                        match this.notice(request, deadline) {
                            Some(now) => return Poll::Ready(Some(now)),
                            None => continue,
                        }
                    }
                    this.entries(&request);
                    return Poll::Ready(Some(request));
                }
                Poll::Ready(None) => {
                    this.input = None;
                    return Poll::Ready(this.held.take().map(|(held, _)| held));
                }
                Poll::Pending => {
                    let Some((_, until)) = this.held.as_mut() else {
                        return Poll::Pending;
                    };
                    if until.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    // The load stopped: later notices go at once until it is back.
                    this.holding = false;
                    return Poll::Ready(this.held.take().map(|(held, _)| held));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::entry::RaftEntry;
    use tokio::sync::mpsc;
    use tokio_stream::StreamExt;
    use tokio_stream::wrappers::UnboundedReceiverStream;

    use super::*;
    use crate::cluster::types::{Entry, LogId, Vote};

    fn log_id(index: u64) -> LogId {
        crate::cluster::types::log_id(1, index)
    }

    fn request(prev: u64, commit: u64, entries: u64) -> Request {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(log_id(prev)),
            leader_commit: Some(log_id(commit)),
            entries: (prev + 1..=prev + entries)
                .map(|index| Entry::new_blank(log_id(index)))
                .collect(),
        }
    }

    /// The next request's previous index, commit index and entry count.
    async fn next<S>(stream: &mut Lingering<S>) -> (u64, u64, usize)
    where
        S: Stream<Item = Request> + Unpin,
    {
        let request = stream.next().await.expect("a request");
        let index = |log_id: Option<LogId>| log_id.expect("a log id").index;
        (
            index(request.prev_log_id),
            index(request.leader_commit),
            request.entries.len(),
        )
    }

    fn send(sender: &mpsc::UnboundedSender<Request>, request: Request) {
        sender.send(request).expect("the stream is open");
    }

    #[tokio::test(start_paused = true)]
    async fn a_commit_notice_followed_by_entries_at_the_same_point_is_dropped() {
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut stream = Lingering::new(UnboundedReceiverStream::new(receiver));
        send(&sender, request(10, 10, 0));
        send(&sender, request(10, 10, 3));
        assert_eq!(next(&mut stream).await, (10, 10, 3));
        drop(sender);
        assert!(stream.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_commit_notice_goes_when_the_linger_is_up_and_later_ones_at_once_until_load_is_back()
    {
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut stream = Lingering::new(UnboundedReceiverStream::new(receiver));
        send(&sender, request(10, 10, 0));
        let started = Instant::now();
        assert_eq!(next(&mut stream).await, (10, 10, 0));
        assert_eq!(started.elapsed(), COMMIT_NOTICE_LINGER);
        // Idle since: the next notice goes at once, and so does one after a late request.
        let started = Instant::now();
        send(&sender, request(10, 11, 0));
        assert_eq!(next(&mut stream).await, (10, 11, 0));
        tokio::time::advance(COMMIT_NOTICE_LINGER * 2).await;
        send(&sender, request(10, 11, 1));
        assert_eq!(next(&mut stream).await, (10, 11, 1));
        send(&sender, request(11, 11, 0));
        assert_eq!(next(&mut stream).await, (11, 11, 0));
        assert_eq!(started.elapsed(), COMMIT_NOTICE_LINGER * 2);
        // Entries that would have covered that notice in time: holding again.
        tokio::time::advance(COMMIT_NOTICE_LINGER / 2).await;
        send(&sender, request(11, 11, 2));
        assert_eq!(next(&mut stream).await, (11, 11, 2));
        send(&sender, request(13, 13, 0));
        send(&sender, request(13, 13, 1));
        assert_eq!(next(&mut stream).await, (13, 13, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_of_notices_keeps_the_first_ones_deadline() {
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut stream = Lingering::new(UnboundedReceiverStream::new(receiver));
        let started = Instant::now();
        // A new notice every half linger, each replacing the one held: were each to start the
        // wait again, none would go until the run stopped.
        for commit in 1..=20 {
            send(&sender, request(10, commit, 0));
            let polled = tokio::time::timeout(Duration::ZERO, stream.next()).await;
            if let Ok(sent) = polled {
                let sent = sent.expect("a request");
                assert_eq!(sent.leader_commit.map(|id| id.index), Some(commit));
                // The timer runs in whole milliseconds, so it may fire up to one late.
                assert!(started.elapsed() <= COMMIT_NOTICE_LINGER + Duration::from_millis(1));
                return;
            }
            tokio::time::advance(COMMIT_NOTICE_LINGER / 2).await;
        }
        panic!("no notice went in {:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_notice_not_covered_by_the_next_request_goes_first() {
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut stream = Lingering::new(UnboundedReceiverStream::new(receiver));
        // Another point (a probe), a lower commit and another vote each keep the notice.
        send(&sender, request(10, 10, 0));
        send(&sender, request(8, 10, 2));
        send(&sender, request(10, 10, 0));
        send(&sender, request(10, 9, 1));
        send(&sender, request(11, 11, 0));
        let mut other_vote = request(11, 11, 1);
        other_vote.vote = Vote::new_committed(2, 1);
        send(&sender, other_vote);
        let started = Instant::now();
        let mut got = Vec::new();
        for _ in 0..6 {
            got.push(next(&mut stream).await);
        }
        assert_eq!(
            got,
            [
                (10, 10, 0),
                (8, 10, 2),
                (10, 10, 0),
                (10, 9, 1),
                (11, 11, 0),
                (11, 11, 1)
            ]
        );
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_request_stream_sends_at_once() {
        let started = Instant::now();
        let mut stream = Lingering::new(tokio_stream::once(request(5, 5, 0)));
        assert_eq!(next(&mut stream).await, (5, 5, 0));
        assert!(stream.next().await.is_none());
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}

//! The pre-connected crowd: clients that connected before the instant leave together, once the
//! last of them has played its requests. A client's QUIT and close cost both sides about as much
//! as a request; sent while the others still wait for their replies, 12,000 of them took the
//! cores from those replies, and the driver set the burst's figure instead of the buffer.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Counts the pre-connected clients still playing, and wakes the others when none is.
#[derive(Default)]
pub struct Crowd {
    playing: AtomicU64,
    all_done: Notify,
}

impl Crowd {
    /// A pre-connected client joins, before its first request.
    pub fn join(&self) {
        self.playing.fetch_add(1, Ordering::AcqRel);
    }

    /// A member has played its requests: returns once every member has, or at `until`, or when
    /// the run stops.
    pub async fn leave(&self, until: Instant, stop: &CancellationToken) {
        if self.playing.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_done.notify_waiters();
            return;
        }
        let notified = self.all_done.notified();
        tokio::pin!(notified);
        // Registered before the count is read, so the last member's wake-up cannot fall between.
        notified.as_mut().enable();
        if self.playing.load(Ordering::Acquire) == 0 {
            return;
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(until) => {}
            _ = stop.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn no_member_leaves_before_the_last_is_done() {
        let crowd = Arc::new(Crowd::default());
        let stop = CancellationToken::new();
        let until = Instant::now() + std::time::Duration::from_secs(600);
        (0..3).for_each(|_| crowd.join());
        let left = Arc::new(AtomicU64::new(0));
        let mut waiting = Vec::new();
        for _ in 0..2 {
            let (crowd, stop, left) = (crowd.clone(), stop.clone(), left.clone());
            waiting.push(tokio::spawn(async move {
                crowd.leave(until, &stop).await;
                left.fetch_add(1, Ordering::SeqCst);
            }));
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(left.load(Ordering::SeqCst), 0, "left while one still plays");
        crowd.leave(until, &stop).await;
        for task in waiting {
            task.await.unwrap();
        }
        assert_eq!(left.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_stopped_run_lets_members_go() {
        let crowd = Crowd::default();
        let stop = CancellationToken::new();
        crowd.join();
        crowd.join();
        stop.cancel();
        crowd
            .leave(Instant::now() + std::time::Duration::from_secs(600), &stop)
            .await;
    }
}

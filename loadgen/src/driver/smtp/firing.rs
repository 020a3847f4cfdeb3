//! The instant itself: pre-connected clients hand their staged connection and the bytes of their
//! first write (prepared before the instant) to firing threads, which write them at their due
//! times, in due order, and hand each connection back to its client.
//!
//! Why not let every client sleep to its due time on the runtime: 12,000 timers due at one
//! instant wake 12,000 tasks that then queue behind each other and behind the replies already
//! coming back (the runtime serves a woken reader before a woken timer), so the last client
//! started hundreds of milliseconds late and the driver, not the buffer, set the figure. A
//! firing thread does nothing but the writes; one per core shares them, each ahead of the
//! buffer's threads when the system permits.

use std::sync::Mutex;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::wire::Connection;

/// Most firing threads, whatever the machine says.
const MAX_THREADS: usize = 16;

/// One client's first write, waiting for its due time.
pub struct Shot {
    pub due: Instant,
    pub conn: Connection,
    pub bytes: Vec<u8>,
    back: oneshot::Sender<Fired>,
}

/// A shot's outcome: the connection back, when the write began, and whether it went out whole.
pub struct Fired {
    pub conn: Connection,
    /// Stamped just before the write (a stamp after it could show precedence that was not).
    pub begun: Instant,
    pub outcome: FireOutcome,
}

/// What became of a fired write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireOutcome {
    /// Every byte was written.
    Written,
    /// Nothing was written (the socket was not ready, or the run stopped): the client writes
    /// the bytes itself, on the runtime.
    NotWritten,
    /// Part of the bytes went out: the transaction cannot go on on this connection.
    Broken,
}

/// The shots of a run, loaded until the start instant, then fired.
pub struct Firing {
    loading: Mutex<Option<Vec<Shot>>>,
    threads: usize,
}

impl Firing {
    /// Firing with one thread per core (at most [`MAX_THREADS`]).
    pub fn new() -> Firing {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Firing {
            loading: Mutex::new(Some(Vec::new())),
            threads: cores.clamp(1, MAX_THREADS),
        }
    }

    /// Loads a shot, taking the connection out of `conn`; `None` (the connection left where it
    /// is) when firing has begun, so the client writes itself, or when the connection cannot be
    /// written from another thread (TLS, trickled).
    pub fn load(
        &self,
        due: Instant,
        conn: &mut Option<Connection>,
        bytes: Vec<u8>,
    ) -> Option<oneshot::Receiver<Fired>> {
        if !conn.as_ref().is_some_and(Connection::can_fire) {
            return None;
        }
        let mut loading = self.loading.lock().unwrap();
        let shots = loading.as_mut()?;
        let (back, fired) = oneshot::channel();
        shots.push(Shot {
            due,
            conn: conn.take().expect("checked above"),
            bytes,
            back,
        });
        Some(fired)
    }

    /// Hands every loaded shot back unwritten and loads no more (the run stopped before its
    /// start).
    pub fn cancel(&self) {
        let shots = self.loading.lock().unwrap().take().unwrap_or_default();
        for shot in shots {
            let _ = shot.back.send(Fired {
                conn: shot.conn,
                begun: Instant::now(),
                outcome: FireOutcome::NotWritten,
            });
        }
    }

    /// Waits until `start`, takes every shot loaded by then and fires them (blocking: run it on
    /// a thread of its own). A shot due after the run is stopped is handed back unwritten.
    pub fn fire_at(&self, start: Instant, stop: &CancellationToken) {
        sleep_until(start);
        let Some(mut shots) = self.loading.lock().unwrap().take() else {
            return;
        };
        shots.sort_by_key(|shot| shot.due);
        let threads = self.threads.min(shots.len()).max(1);
        let mut parts: Vec<Vec<Shot>> = (0..threads).map(|_| Vec::new()).collect();
        // Dealt in turn, so each thread's part stays in due order and every thread is busy at
        // an instant shared by many.
        for (n, shot) in shots.into_iter().enumerate() {
            parts[n % threads].push(shot);
        }
        let ahead = std::thread::scope(|scope| {
            let threads: Vec<_> = parts
                .into_iter()
                .map(|part| {
                    std::thread::Builder::new()
                        .name("landrush-fire".into())
                        .spawn_scoped(scope, move || {
                            let ahead = run_ahead();
                            fire_in_order(part, stop);
                            ahead
                        })
                        .expect("cannot start a firing thread")
                })
                .collect();
            let joined = threads.into_iter().map(|t| t.join());
            let ahead: Vec<bool> = joined
                .map(|j| j.unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                .collect();
            ahead.into_iter().all(|a| a)
        });
        if !ahead {
            tracing::warn!(
                "the firing threads ran at ordinary priority, behind the buffer's threads their \
                 writes woke: the driver lag is larger than it need be. Run landrush as root or \
                 with CAP_SYS_NICE to fire ahead of them"
            );
        }
    }
}

impl Default for Firing {
    fn default() -> Self {
        Firing::new()
    }
}

/// Fires `shots` (in due order), each at its due time. The connections are handed back when the
/// thread has nothing due left to write, not one by one: each connection handed back wakes its
/// client on the runtime, whose threads would take the cores from the writes still due.
fn fire_in_order(shots: Vec<Shot>, stop: &CancellationToken) {
    let mut fired = Vec::with_capacity(shots.len());
    for shot in shots {
        if shot.due > Instant::now() {
            hand_back(&mut fired);
            sleep_until(shot.due);
        }
        let begun = Instant::now();
        let outcome = if stop.is_cancelled() {
            FireOutcome::NotWritten
        } else {
            match shot.conn.try_write_now(&shot.bytes) {
                Ok(n) if n == shot.bytes.len() => FireOutcome::Written,
                Ok(0) | Err(_) => FireOutcome::NotWritten,
                Ok(_) => FireOutcome::Broken,
            }
        };
        let conn = shot.conn;
        fired.push((
            shot.back,
            Fired {
                conn,
                begun,
                outcome,
            },
        ));
    }
    hand_back(&mut fired);
}

fn hand_back(fired: &mut Vec<(oneshot::Sender<Fired>, Fired)>) {
    for (back, fired) in fired.drain(..) {
        // The client went away only if its run was torn down: nothing to hand back to.
        let _ = back.send(fired);
    }
}

/// Puts the calling thread ahead of every ordinary thread (SCHED_FIFO at the lowest real-time
/// priority); false when not permitted (root or CAP_SYS_NICE is needed). Each write wakes the
/// buffer's reader, which on the same cores took them from the writes still due: instant-12k's
/// driver lag p99 was 91-108 ms at ordinary priority, 40-56 ms ahead. Bounded: a firing thread
/// only writes what is due and sleeps in between.
fn run_ahead() -> bool {
    let param = nix::libc::sched_param { sched_priority: 1 };
    // SAFETY: pid 0 names the calling thread; `param` is valid for the call.
    unsafe { nix::libc::sched_setscheduler(0, nix::libc::SCHED_FIFO, &param) == 0 }
}

/// A thread's sleep until `at` (no-op when it has passed).
fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

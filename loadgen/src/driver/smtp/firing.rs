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

use std::collections::VecDeque;
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
    loading: Mutex<Loading>,
}

/// The shots loaded so far, dealt in turn to the firing threads' parts as they come, so that
/// nothing but the writes is left to do at the instant (sorting and dealing 12,000 shots there
/// made the first write 7 ms late).
struct Loading {
    /// False from the instant a firing thread takes its part (or the run is cancelled) on.
    open: bool,
    parts: Vec<Vec<Shot>>,
    next: usize,
}

impl Firing {
    /// Firing with one thread per core (at most [`MAX_THREADS`]).
    pub fn new() -> Firing {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let parts = (0..cores.clamp(1, MAX_THREADS))
            .map(|_| Vec::new())
            .collect();
        Firing {
            loading: Mutex::new(Loading {
                open: true,
                parts,
                next: 0,
            }),
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
        if !loading.open {
            return None;
        }
        let (back, fired) = oneshot::channel();
        let next = loading.next;
        loading.parts[next].push(Shot {
            due,
            conn: conn.take().expect("checked above"),
            bytes,
            back,
        });
        loading.next = (next + 1) % loading.parts.len();
        Some(fired)
    }

    /// Hands every loaded shot back unwritten and loads no more (the run stopped before its
    /// start).
    pub fn cancel(&self) {
        let parts = {
            let mut loading = self.loading.lock().unwrap();
            loading.open = false;
            std::mem::take(&mut loading.parts)
        };
        for shot in parts.into_iter().flatten() {
            let _ = shot.back.send(Fired {
                conn: shot.conn,
                begun: Instant::now(),
                outcome: FireOutcome::NotWritten,
            });
        }
    }

    /// Starts the firing threads, which wait until `start`, take their parts of the shots loaded
    /// by then and fire them (blocking until they are done: run it on a thread of its own, a
    /// little before the start). A shot due after the run is stopped is handed back unwritten.
    pub fn fire_at(&self, start: Instant, stop: &CancellationToken) {
        let threads = self.loading.lock().unwrap().parts.len();
        // Started before the instant, so that each is ahead of the buffer's threads and asleep
        // when it comes: a thread started at the instant once waited 64 ms for a core.
        let ahead = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..threads)
                .map(|part| {
                    std::thread::Builder::new()
                        .name("landrush-fire".into())
                        .spawn_scoped(scope, move || {
                            let ahead = run_ahead();
                            sleep_until(start, stop);
                            fire_in_order(self.take_part(part), stop);
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

    /// A firing thread's part (empty once cancelled); loads no more from then on.
    fn take_part(&self, part: usize) -> Vec<Shot> {
        let mut loading = self.loading.lock().unwrap();
        loading.open = false;
        loading
            .parts
            .get_mut(part)
            .map(std::mem::take)
            .unwrap_or_default()
    }
}

impl Default for Firing {
    fn default() -> Self {
        Firing::new()
    }
}

/// Fires `shots`, each at its due time, in due order. The connections are handed back when the
/// thread has nothing due left to write, not one by one: each connection handed back wakes its
/// client on the runtime, whose threads would take the cores from the writes still due. Until
/// then nothing is moved or freed, only the writes' outcomes noted.
fn fire_in_order(mut shots: Vec<Shot>, stop: &CancellationToken) {
    // Dealt in load order, which is nearly due order: cheap to sort.
    shots.sort_by_key(|shot| shot.due);
    let mut shots = VecDeque::from(shots);
    let mut written: Vec<(Instant, FireOutcome)> = Vec::with_capacity(shots.len());
    while let Some(shot) = shots.get(written.len()) {
        // Once the run is stopped nothing is waited for: every shot left goes back unwritten.
        if shot.due > Instant::now() && !stop.is_cancelled() {
            let due = shot.due;
            hand_back(&mut shots, &mut written);
            sleep_until(due, stop);
            continue;
        }
        let begun = Instant::now();
        written.push((begun, write(shot, stop)));
    }
    hand_back(&mut shots, &mut written);
}

/// Writes a shot's bytes at once, unless the run is stopped.
fn write(shot: &Shot, stop: &CancellationToken) -> FireOutcome {
    if stop.is_cancelled() {
        return FireOutcome::NotWritten;
    }
    match shot.conn.try_write_now(&shot.bytes) {
        Ok(n) if n == shot.bytes.len() => FireOutcome::Written,
        Ok(0) | Err(_) => FireOutcome::NotWritten,
        Ok(_) => FireOutcome::Broken,
    }
}

/// Hands the shots `written` describes (the first of `shots`) back to their clients.
fn hand_back(shots: &mut VecDeque<Shot>, written: &mut Vec<(Instant, FireOutcome)>) {
    let fired = shots.drain(..written.len());
    for (shot, (begun, outcome)) in fired.zip(written.drain(..)) {
        let fired = Fired {
            conn: shot.conn,
            begun,
            outcome,
        };
        // The client went away only if its run was torn down: nothing to hand back to.
        let _ = shot.back.send(fired);
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

/// A thread's sleep until `at` (no-op when it has passed), cut short when the run is stopped:
/// a shot may be due minutes ahead, and a stopped run must not wait for it.
fn sleep_until(at: Instant, stop: &CancellationToken) {
    loop {
        let now = Instant::now();
        if at <= now || stop.is_cancelled() {
            return;
        }
        std::thread::sleep((at - now).min(STOP_LOOK));
    }
}

/// How often a sleeping firing thread looks whether the run was stopped.
const STOP_LOOK: std::time::Duration = std::time::Duration::from_millis(20);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;
    use crate::driver::smtp::wire::Opened;

    /// A server that greets, answers EHLO and then sends back, per connection, what it read
    /// after the EHLO until the client closes.
    async fn echo_after_ehlo() -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    stream.get_mut().write_all(b"220 test\r\n").await.unwrap();
                    let mut ehlo = String::new();
                    stream.read_line(&mut ehlo).await.unwrap();
                    stream.get_mut().write_all(b"250 test\r\n").await.unwrap();
                    let mut rest = Vec::new();
                    stream.read_to_end(&mut rest).await.unwrap();
                    let _ = tx.send(rest).await;
                });
            }
        });
        (addr, rx)
    }

    async fn connect(addr: std::net::SocketAddr) -> Option<Connection> {
        let long = Duration::from_secs(60);
        let deadline = Instant::now() + long;
        match Connection::open(addr, "client.test", long, long, deadline).await {
            Ok(Opened::Ready(conn)) => Some(conn),
            _ => panic!("the test server greets and answers EHLO"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loaded_shots_are_written_at_the_start_and_handed_back() {
        let (addr, mut received) = echo_after_ehlo().await;
        let firing = std::sync::Arc::new(Firing::new());
        let start = Instant::now() + Duration::from_millis(200);
        let mut shots = Vec::new();
        for n in 0..5u8 {
            let mut conn = connect(addr).await;
            let shot = firing.load(start, &mut conn, vec![b'a' + n; 3]).unwrap();
            assert!(conn.is_none(), "a loaded shot takes its connection");
            shots.push(shot);
        }
        let fire = firing.clone();
        let stop = CancellationToken::new();
        let fired = tokio::task::spawn_blocking(move || fire.fire_at(start, &stop));
        let mut back = Vec::new();
        for shot in shots {
            let fired = shot.await.expect("every shot is answered");
            assert_eq!(fired.outcome, FireOutcome::Written);
            assert!(fired.begun >= start, "written at its due time, not before");
            back.push(fired.conn);
        }
        fired.await.unwrap();
        let mut late = connect(addr).await;
        assert!(firing.load(start, &mut late, b"x".to_vec()).is_none());
        assert!(
            late.is_some(),
            "a shot loaded too late leaves its connection"
        );
        drop((back, late));
        let mut written = Vec::new();
        for _ in 0..6 {
            written.push(received.recv().await.unwrap());
        }
        written.sort();
        let expected: Vec<Vec<u8>> = std::iter::once(Vec::new())
            .chain((0..5u8).map(|n| vec![b'a' + n; 3]))
            .collect();
        assert_eq!(written, expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_firing_hands_every_shot_back_unwritten() {
        let (addr, _received) = echo_after_ehlo().await;
        let firing = Firing::new();
        let due = Instant::now() + Duration::from_secs(3600);
        let mut shots = Vec::new();
        for _ in 0..3 {
            shots.push(firing.load(due, &mut connect(addr).await, b"DATA\r\n".to_vec()));
        }
        firing.cancel();
        for shot in shots {
            let fired = shot.unwrap().await.unwrap();
            assert_eq!(fired.outcome, FireOutcome::NotWritten);
        }
        let mut conn = connect(addr).await;
        assert!(firing.load(due, &mut conn, b"DATA\r\n".to_vec()).is_none());
        // A firing started after the cancel has nothing to fire and returns at once.
        firing.fire_at(Instant::now(), &CancellationToken::new());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_stopped_while_its_shots_wait_gets_them_back_unwritten() {
        let (addr, _received) = echo_after_ehlo().await;
        let firing = std::sync::Arc::new(Firing::new());
        let due = Instant::now() + Duration::from_secs(3600);
        let mut shots = Vec::new();
        for _ in 0..3 {
            shots.push(firing.load(due, &mut connect(addr).await, b"DATA\r\n".to_vec()));
        }
        let stop = CancellationToken::new();
        let (fire, stopped) = (firing.clone(), stop.clone());
        // A thread of its own, not the runtime's blocking pool: the runtime would wait for it
        // at the end of a failed test.
        let fired = std::thread::spawn(move || fire.fire_at(Instant::now(), &stopped));
        // Loading closes when a firing thread takes its part: from then on it sleeps to the
        // due hour, and only the stop can wake it.
        let mut probe = connect(addr).await;
        while let Some(taken) = firing.load(due, &mut probe, Vec::new()) {
            shots.push(Some(taken));
            probe = connect(addr).await;
            tokio::task::yield_now().await;
        }
        stop.cancel();
        // Bounded only so that a firing thread that sleeps on to the due hour fails the test
        // rather than hangs it.
        let back = async {
            for shot in shots {
                let fired = shot.unwrap().await.unwrap();
                assert_eq!(fired.outcome, FireOutcome::NotWritten);
            }
        };
        tokio::time::timeout(Duration::from_secs(600), back)
            .await
            .expect("a stopped run's shots come back before they are due");
        fired.join().unwrap();
    }
}

//! The disk threads: every file-system call of the saving mode runs here,
//! so the serving loop never waits for a disk.
//!
//! A slow disk (a busy HDD, network storage, a FUSE file system, a big
//! fsync) must not delay a greeting, an idle timeout, a watchdog ping or a
//! stop. So the loop only notes that a saving connection's socket is
//! readable, and this pool does the rest: a few threads that move the bytes
//! socket -> pipe -> file with `splice` (no user-space copy), make the file
//! durable and give it its name. One thread does both splices of a
//! connection, as a plain receiver would: a hand-over per megabyte between
//! the loop and a disk thread cost a third of the throughput on a 2-core
//! machine.
//!
//! Back-pressure instead of buffering: a connection has at most one job in
//! flight, and its pipe (1 MiB at most) is all the data between socket and
//! file. While the disk is behind, nobody reads that socket, the kernel's
//! receive window closes, and TCP slows the client down to what the disk
//! takes. Memory stays O(1) per connection whatever the disk does.
//!
//! Threads are started on demand up to [`WORKERS`], plus one that measures
//! free space twice a second (the figure new connections are refused by):
//! eight in all, well under the unit's `TasksMax=64`. Results come back on a
//! channel, and a mio `Waker` wakes the loop to read them.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use crate::save::{CommitError, Part, Pumped, SaveDir};

/// Disk threads that run jobs; with the space monitor, eight in all.
pub const WORKERS: usize = 7;
/// How often the space monitor measures free space.
const MEASURE_EVERY: Duration = Duration::from_millis(500);

/// Which connection a job or its result is for: the loop's slot, the
/// connection's id (which tells a reused slot from the original) and its
/// number (which names its file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct For {
    pub slot: usize,
    pub id: u64,
    pub number: u64,
}

pub enum Job {
    /// Move what the client sent into the file, `counted` bytes having
    /// been moved before, `max` at most (0: no limit).
    Pump {
        part: Box<Part>,
        counted: u64,
        max: u64,
        fsync: bool,
    },
    /// The client closed in order: make the file durable and name it.
    Commit { part: Box<Part>, fsync: bool },
    /// The connection ended with ERROR: drop the temporary, write the
    /// marker.
    Fail { part: Box<Part> },
}

pub enum Done {
    Pumped { part: Box<Part>, pumped: Pumped },
    Committed(Result<PathBuf, CommitError>),
    Marked(io::Result<()>),
}

struct Queue {
    jobs: VecDeque<(For, Job)>,
    idle: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// The stop's grace is over: cut drains short, commit nothing more.
    abandon: AtomicBool,
    /// Tells the space monitor to end.
    done: AtomicBool,
    dir: Arc<SaveDir>,
}

/// The loop's handle on the disk threads.
pub struct Disk {
    shared: Arc<Shared>,
    results: Receiver<(For, Done)>,
    sender: Sender<(For, Done)>,
    waker: Arc<mio::Waker>,
    workers: usize,
    /// The numbers of the connections with jobs handed out whose result
    /// has not been read yet, with how many jobs each.
    in_flight: HashMap<u64, u32>,
}

fn lock(m: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Disk {
    /// Start the space monitor and the first worker (so that a system out
    /// of threads fails at start, not at the first upload).
    pub fn start(dir: Arc<SaveDir>, waker: mio::Waker) -> io::Result<Disk> {
        let (sender, results) = mpsc::channel();
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                idle: 0,
            }),
            ready: Condvar::new(),
            abandon: AtomicBool::new(false),
            done: AtomicBool::new(false),
            dir,
        });
        let monitor = Arc::clone(&shared);
        thread::Builder::new().name("space".into()).spawn(move || {
            while !monitor.done.load(Ordering::Relaxed) {
                monitor.dir.measure();
                thread::sleep(MEASURE_EVERY);
            }
        })?;
        let mut disk = Disk {
            shared,
            results,
            sender,
            waker: Arc::new(waker),
            workers: 0,
            in_flight: HashMap::new(),
        };
        disk.spawn()?;
        Ok(disk)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let shared = Arc::clone(&self.shared);
        let sender = self.sender.clone();
        let waker = Arc::clone(&self.waker);
        thread::Builder::new()
            .name(format!("disk{}", self.workers))
            .stack_size(128 * 1024)
            .spawn(move || work(&shared, &sender, &waker))?;
        self.workers += 1;
        Ok(())
    }

    /// Queue a job. Marker jobs go first: they are small, and at a stop
    /// they are what is left to do.
    pub fn submit(&mut self, to: For, job: Job) {
        let spawn = {
            let mut q = lock(&self.shared.queue);
            if matches!(job, Job::Fail { .. }) {
                q.jobs.push_front((to, job));
            } else {
                q.jobs.push_back((to, job));
            }
            q.idle < q.jobs.len()
        };
        *self.in_flight.entry(to.number).or_default() += 1;
        // A failed spawn only means fewer threads: the queue still drains.
        if spawn && self.workers < WORKERS {
            let _ = self.spawn();
        }
        self.shared.ready.notify_one();
    }

    /// The next result, if one is waiting.
    pub fn result(&mut self) -> Option<(For, Done)> {
        let r = self.results.try_recv().ok()?;
        if let Some(n) = self.in_flight.get_mut(&r.0.number) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(&r.0.number);
            }
        }
        Some(r)
    }

    /// Whether any job's result is still to come.
    pub fn busy(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// The stop's grace is over: jobs in progress give up at their next
    /// step, and no file is named any more.
    pub fn abandon(&self) {
        self.shared.abandon.store(true, Ordering::Relaxed);
        self.shared.dir.begin_stop();
    }

    pub fn dir(&self) -> &Arc<SaveDir> {
        &self.shared.dir
    }

    /// At exit: the jobs no thread has taken will not run, and the results
    /// of those under way will not be read. Their connections ended with
    /// `ERROR`, so their markers go to the exit handover (a marker never
    /// replaces a file that was named meanwhile), and so do the queued
    /// jobs' temporaries (their parts are dropped with the exit begun).
    pub fn defer_unfinished(&self) {
        let jobs: Vec<(For, Job)> = lock(&self.shared.queue).jobs.drain(..).collect();
        drop(jobs);
        for &number in self.in_flight.keys() {
            self.shared.dir.defer_marker(number);
        }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        self.shared.done.store(true, Ordering::Relaxed);
    }
}

/// Signals are the loop's business: a disk thread (and the fsync processes
/// it starts) takes none.
fn block_signals() {
    // SAFETY: a full set, applied to the calling thread only.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
}

fn work(shared: &Shared, results: &Sender<(For, Done)>, waker: &mio::Waker) {
    block_signals();
    loop {
        let (to, job) = {
            let mut q = lock(&shared.queue);
            loop {
                if let Some(job) = q.jobs.pop_front() {
                    break job;
                }
                q.idle += 1;
                q = shared
                    .ready
                    .wait(q)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                q.idle -= 1;
            }
        };
        let abandon = &shared.abandon;
        let done = match job {
            Job::Pump {
                mut part,
                counted,
                max,
                fsync,
            } => {
                let pumped = part.pump(counted, max, fsync, abandon);
                Done::Pumped { part, pumped }
            }
            Job::Commit { part, fsync } => Done::Committed(part.commit(to.number, fsync, abandon)),
            Job::Fail { part } => {
                drop(part);
                Done::Marked(shared.dir.mark_error(to.number))
            }
        };
        if results.send((to, done)).is_err() {
            return;
        }
        // A failed wake only delays the result to the loop's next round.
        let _ = waker.wake();
    }
}

//! The loop's side of saving: handing each saving connection's next step
//! to the disk threads, and acting on what they finished. Nothing here
//! touches a file.

use std::time::Instant;

use super::Server;
use crate::connection::{Outcome, Progress, Saving, read_failed};
use crate::disk::{Disk, Done, For, Job};
use crate::save::{CommitError, PumpEnd};

impl Server<'_> {
    pub(super) fn is_saving(&self, slot: usize) -> bool {
        self.conns
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.save.is_some())
    }

    pub(super) fn saving_mut(&mut self, slot: usize) -> Option<&mut Saving> {
        self.conns.get_mut(slot)?.as_mut()?.save.as_mut()
    }

    /// Hand a saving connection's next step to the disk threads, if its
    /// part is home and there is one.
    pub(super) fn kick(&mut self, slot: usize) {
        let fsync = self.settings.fsync;
        let max = self.settings.max_file_size;
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let to = For {
            slot,
            id: conn.id,
            number: conn.number,
        };
        if let (Some(save), Some(disk)) = (conn.save.as_mut(), self.disk.as_mut())
            && let Some(job) = save.next_job(fsync, max, conn.bytes)
        {
            disk.submit(to, job);
        }
    }

    /// Act on what the disk threads finished.
    pub(super) fn disk_results(&mut self) {
        while let Some((to, done)) = self.disk.as_mut().and_then(Disk::result) {
            let present = self
                .conns
                .get(to.slot)
                .and_then(Option::as_ref)
                .is_some_and(|c| c.id == to.id);
            match done {
                Done::Pumped { mut part, .. } if !present => {
                    // The connection ended (timeout, reset, stop) while its
                    // bytes were on the way: now its marker can be written.
                    part.release_socket();
                    if let Some(disk) = self.disk.as_mut() {
                        disk.submit(to, Job::Fail { part });
                    }
                }
                Done::Pumped { part, pumped } => {
                    let idle = self.settings.idle_timeout;
                    let Some(conn) = self.conns.get_mut(to.slot).and_then(Option::as_mut) else {
                        continue;
                    };
                    let Some(save) = conn.save.as_mut() else {
                        continue;
                    };
                    save.home(part);
                    conn.bytes += pumped.read;
                    if pumped.read > 0 {
                        conn.deadline = Instant::now() + idle;
                    }
                    let outcome = match pumped.end {
                        PumpEnd::Idle => None,
                        PumpEnd::More => {
                            save.readable = true;
                            None
                        }
                        PumpEnd::Eof => {
                            save.eof = true;
                            None
                        }
                        PumpEnd::TooLarge => Some(Outcome::TooLarge(self.settings.max_file_size)),
                        PumpEnd::Socket(e) => match read_failed(e) {
                            Progress::Failed(e) => Some(Outcome::Failed(e)),
                            _ => Some(Outcome::Reset),
                        },
                        PumpEnd::File(e) => Some(Outcome::SaveFailed(e)),
                    };
                    match outcome {
                        Some(outcome) => self.finish(to.slot, outcome),
                        None => self.kick(to.slot),
                    }
                }
                Done::Committed(result) if present => {
                    if let Some(save) = self.saving_mut(to.slot) {
                        save.committing = false;
                    }
                    let outcome = match result {
                        Ok(_) => Outcome::Counted,
                        Err(CommitError::NameTaken(path)) => Outcome::NameTaken(path),
                        Err(CommitError::Abandoned) => Outcome::Stopped,
                        Err(CommitError::Io(e)) => Outcome::SaveFailed(e),
                    };
                    self.finish(to.slot, outcome);
                }
                Done::Committed(_) => {}
                Done::Marked(Err(e)) => self.log.err(&format!(
                    "connection {}: cannot write its ERROR file: {e}",
                    to.number
                )),
                Done::Marked(Ok(())) => {}
            }
        }
    }
}

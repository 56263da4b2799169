//! The loop's side of saving: handing each saving connection's next step
//! to the disk threads, and acting on what they finished. Nothing here
//! touches a file.

use std::time::Instant;

use super::Server;
use crate::connection::{Outcome, Saving};
use crate::disk::{Disk, Done, For, Job};
use crate::save::CommitError;

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
    /// part is home and there is one. A drain that hands over the full pipe
    /// leaves the loop an empty one: reading goes on at once.
    pub(super) fn kick(&mut self, slot: usize) {
        let fsync = self.settings.fsync;
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let to = For {
            slot,
            id: conn.id,
            number: conn.number,
        };
        if let (Some(save), Some(disk)) = (conn.save.as_mut(), self.disk.as_mut())
            && let Some(job) = save.next_job(fsync)
        {
            disk.submit(to, job);
            if save.has_room() && std::mem::take(&mut save.blocked) {
                self.busy.push(slot);
            }
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
                Done::Drained { part, .. } if !present => {
                    // The connection ended (timeout, reset, stop) while its
                    // bytes were on the way: now its marker can be written.
                    if let Some(disk) = self.disk.as_mut() {
                        disk.submit(to, Job::Fail { part });
                    }
                }
                Done::Drained { part, moved, error } => {
                    let idle = self.settings.idle_timeout;
                    let Some(conn) = self.conns.get_mut(to.slot).and_then(Option::as_mut) else {
                        continue;
                    };
                    let Some(save) = conn.save.as_mut() else {
                        continue;
                    };
                    save.drained(part, moved);
                    if let Some(e) = error {
                        self.finish(to.slot, Outcome::SaveFailed(e));
                        continue;
                    }
                    if std::mem::take(&mut save.blocked) {
                        // The client was waiting for the disk, not idle.
                        conn.deadline = Instant::now() + idle;
                        self.busy.push(to.slot);
                    }
                    self.kick(to.slot);
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

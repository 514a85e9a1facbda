//! The local suspicion timeout: which suspects this node declares down on
//! its own. Owns only the time each suspicion was first seen; it reads no
//! clock (the caller hands it the time) and changes no membership state
//! (the caller applies the verdicts).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::MemberId;

/// foca starts the suspect → down timer only on the member whose own probe
/// failed; the others wait for that verdict to reach them by gossip, and a
/// member that misses every retransmission keeps a dead node as suspect
/// until it probes it itself (up to N probe periods: 7 % of failures in a
/// simulation of 200 members with 10 % loss). As in the SWIM paper and
/// memberlist, every member therefore also times suspicions out on its own,
/// after twice the suspicion timeout, so the suspector's verdict or the
/// suspect's refutation normally comes first.
#[derive(Debug, Default)]
pub(super) struct SuspicionTimer {
    /// Per suspect: the SWIM incarnation it is suspected at, and since when.
    since: HashMap<SocketAddr, (u16, Instant)>,
}

impl SuspicionTimer {
    /// The members to declare down at `now`, given foca's membership state
    /// and the suspicion timeout in force. A verdict restarts the member's
    /// clock: should it stay suspect, it is tried again a timeout later,
    /// not at every step.
    pub(super) fn overdue<'a>(
        &mut self,
        members: impl Iterator<Item = &'a foca::Member<MemberId>>,
        now: Instant,
        suspect_to_down_after: Duration,
    ) -> Vec<foca::Member<MemberId>> {
        let limit = suspect_to_down_after * 2;
        let mut overdue = Vec::new();
        let mut suspects = HashSet::new();
        for member in members.filter(|m| m.state() == foca::State::Suspect) {
            let addr = member.id().peer;
            suspects.insert(addr);
            let since = self
                .since
                .entry(addr)
                .or_insert((member.incarnation(), now));
            if since.0 != member.incarnation() {
                *since = (member.incarnation(), now);
            } else if now.saturating_duration_since(since.1) >= limit {
                since.1 = now;
                overdue.push(foca::Member::new(
                    member.id().clone(),
                    member.incarnation(),
                    foca::State::Down,
                ));
            }
        }
        self.since.retain(|addr, _| suspects.contains(addr));
        overdue
    }

    /// When the next suspicion seen so far times out.
    pub(super) fn next_expiry(&self, suspect_to_down_after: Duration) -> Option<Instant> {
        let first = self.since.values().map(|(_, since)| *since).min()?;
        Some(first + suspect_to_down_after * 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suspect(port: u16, incarnation: u16) -> foca::Member<MemberId> {
        let peer = SocketAddr::from(([127, 0, 0, 1], port));
        let id = MemberId {
            node_id: u64::from(port),
            incarnation: 1,
            name: format!("n{port}"),
            peer,
            client: peer,
        };
        foca::Member::new(id, incarnation, foca::State::Suspect)
    }

    #[test]
    fn a_suspect_is_overdue_after_twice_the_timeout_and_a_refutation_restarts_it() {
        let mut timer = SuspicionTimer::default();
        let timeout = Duration::from_secs(2);
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let first = [suspect(4001, 0)];
        assert!(timer.overdue(first.iter(), at(0), timeout).is_empty());
        assert_eq!(timer.next_expiry(timeout), Some(at(4)));
        assert!(timer.overdue(first.iter(), at(3), timeout).is_empty());
        // Refuted at a higher incarnation, then suspected again: a new clock.
        let refuted = [suspect(4001, 1)];
        assert!(timer.overdue(refuted.iter(), at(3), timeout).is_empty());
        assert!(timer.overdue(refuted.iter(), at(6), timeout).is_empty());
        assert_eq!(timer.next_expiry(timeout), Some(at(7)));
        let overdue = timer.overdue(refuted.iter(), at(7), timeout);
        assert_eq!(overdue.len(), 1);
        assert_eq!(overdue[0].state(), foca::State::Down);
        assert_eq!(overdue[0].incarnation(), 1);
        assert!(
            timer.overdue(refuted.iter(), at(7), timeout).is_empty(),
            "the verdict restarts the clock"
        );
        assert_eq!(timer.next_expiry(timeout), Some(at(11)));
    }

    #[test]
    fn a_suspicion_that_ends_is_forgotten() {
        let mut timer = SuspicionTimer::default();
        let timeout = Duration::from_secs(2);
        let t0 = Instant::now();
        let suspected = [suspect(4001, 0)];
        assert!(timer.overdue(suspected.iter(), t0, timeout).is_empty());
        assert!(timer.overdue([].iter(), t0, timeout).is_empty());
        assert_eq!(timer.next_expiry(timeout), None);
        let later = t0 + Duration::from_secs(10);
        assert!(
            timer.overdue(suspected.iter(), later, timeout).is_empty(),
            "suspected again: timed from now, not from the first time"
        );
    }
}

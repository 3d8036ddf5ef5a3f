//! What a soak run found: the figures of the final audit, the faults injected, and the list of
//! violations (empty = the run passed). The `soak` binary prints it as a table and exits non-zero
//! on any violation; the CI test asserts on it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::faults::FaultLog;
use super::replicas::Crash;
use super::workload::DriverStats;

/// Messages that reached one consumer queue, and what became of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueFate {
    /// Distinct messages routed to the queue.
    pub published: usize,
    /// Handled and acknowledged by some replica.
    pub handled: usize,
    /// Given up on and published to `connecx.dead`.
    pub dead_lettered: usize,
    /// Neither: lost.
    pub lost: usize,
}

/// The final audit's counts. "Explained" = a dead letter names the booking (or, for a facility
/// booking, another booking of its slot), so a person was told.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    pub visitor_bookings: usize,
    pub facility_bookings: usize,
    pub live_bookings: usize,
    pub cancelled_bookings: usize,
    /// booking-api's status per kind: `visitor granted` → n.
    pub statuses: BTreeMap<String, usize>,
    /// Bookings booking-api does not show as the client was told (state, window, version), and
    /// bookings it has that the client never got.
    pub client_mismatches: usize,
    /// Bookings whose final access state is wrong: booking-api's status is not the one the
    /// booking must end in, or disagrees with the simulator (PIN, window, holder).
    pub wrong_state: usize,
    pub wrong_state_explained: usize,
    /// Grants in the simulators without a live booking window.
    pub stale_grants: usize,
    /// Live bookings without their grant in the simulator.
    pub missing_grants: usize,
    /// Of `stale_grants + missing_grants`.
    pub stale_explained: usize,
    /// More than one grant for one booking or one slot (iPassan visitors per booking, Salto
    /// entries per zone, bookings booking-api shows granted per slot), beyond the first.
    pub duplicate_grants: usize,
    pub duplicate_visitors: usize,
    pub mails: usize,
    /// Mails identical (recipient, subject, text) to an earlier one.
    pub duplicate_mails: usize,
    pub duplicate_mail_samples: Vec<String>,
    /// Mails telling managers a building's connection is down, and works again.
    pub outage_mails: (usize, usize),
    /// Those mails: when, what, to whom.
    pub outage_mail_lines: Vec<String>,
    pub dead_letters: usize,
    pub dead_letters_by_kind: BTreeMap<String, usize>,
    pub dead_letters_alerted: usize,
    /// Dead letters the notifier could not store (parked: no alert).
    pub parked: usize,
    /// Dead letters seen on `connecx.dead` that the notifier never stored.
    pub dead_letters_unstored: usize,
    pub queues: BTreeMap<String, QueueFate>,
    pub outbox_unsent: usize,
    pub outbox_parked: usize,
    /// Sent outbox events the broker tap never saw.
    pub outbox_unpublished: usize,
    /// From each booking's creation (booking-api's 201) to its first access outcome (result
    /// event of version 1), for bookings that ask for access: the other buildings' while the
    /// building on its own systems was out, the other buildings' overall, and that building's.
    pub latency_others_during_outage: Latencies,
    pub latency_others: Latencies,
    pub latency_own: Latencies,
    /// A few examples per finding, for a person to start from.
    pub samples: Vec<String>,
}

/// Figures of a set of latencies.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latencies {
    pub count: usize,
    pub p50: std::time::Duration,
    pub p99: std::time::Duration,
    pub max: std::time::Duration,
}

impl Latencies {
    pub fn of(mut all: Vec<std::time::Duration>) -> Self {
        all.sort();
        let at = |p: f64| {
            if all.is_empty() {
                std::time::Duration::ZERO
            } else {
                all[((all.len() - 1) as f64 * p).round() as usize]
            }
        };
        Self {
            count: all.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: all.last().copied().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.count == 0 {
            return f.write_str("none");
        }
        write!(
            f,
            "{} bookings: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            self.count,
            self.p50.as_secs_f64() * 1000.0,
            self.p99.as_secs_f64() * 1000.0,
            self.max.as_secs_f64() * 1000.0
        )
    }
}

/// Another building's bookings may take at most this long (p99) to their first access outcome
/// while one building's systems are out: their queues, slots and connections are their own.
pub const OTHERS_P99_DURING_OUTAGE: std::time::Duration = std::time::Duration::from_secs(10);

impl Audit {
    pub fn lost(&self) -> usize {
        self.queues.values().map(|q| q.lost).sum()
    }

    pub fn sample(&mut self, text: String) {
        if self.samples.len() < 40 {
            self.samples.push(text);
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    pub seed: u64,
    pub replicas: usize,
    pub rate: f64,
    pub load: DriverStats,
    pub drain: Duration,
    pub drain_timed_out: bool,
    pub still_busy: Vec<String>,
    pub total: Duration,
    pub faults: FaultLog,
    pub crashes: Vec<Crash>,
    pub audit: Audit,
    pub error_lines: BTreeMap<String, usize>,
    pub error_samples: Vec<String>,
    pub violations: Vec<String>,
}

impl SoakReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Fills `violations` from the figures.
    pub fn judge(&mut self) {
        let a = &self.audit;
        let mut v = Vec::new();
        let mut check = |bad: bool, text: String| {
            if bad {
                v.push(text);
            }
        };
        check(
            self.drain_timed_out,
            format!("the system did not drain: {}", self.still_busy.join("; ")),
        );
        check(
            self.load.unexpected > 0,
            format!(
                "{} requests got an answer the workload never expects",
                self.load.unexpected
            ),
        );
        check(
            a.client_mismatches > 0,
            format!(
                "{} bookings differ between booking-api and its client",
                a.client_mismatches
            ),
        );
        let wrong = a.wrong_state.saturating_sub(a.wrong_state_explained);
        check(
            wrong > 0,
            format!("{wrong} bookings end in a wrong access state"),
        );
        let stale = (a.stale_grants + a.missing_grants).saturating_sub(a.stale_explained);
        check(
            stale > 0,
            format!("{stale} stale or missing grants no dead letter explains"),
        );
        check(
            a.duplicate_grants + a.duplicate_visitors > 0,
            format!(
                "{} duplicate grants, {} duplicate visitors",
                a.duplicate_grants, a.duplicate_visitors
            ),
        );
        check(
            a.dead_letters_alerted < a.dead_letters,
            format!(
                "{} of {} dead letters produced no alert email",
                a.dead_letters - a.dead_letters_alerted,
                a.dead_letters
            ),
        );
        check(
            a.parked + a.dead_letters_unstored > 0,
            format!(
                "{} dead letters parked, {} never stored (no alert)",
                a.parked, a.dead_letters_unstored
            ),
        );
        check(a.lost() > 0, format!("{} messages lost", a.lost()));
        check(
            a.outbox_unsent + a.outbox_parked + a.outbox_unpublished > 0,
            format!(
                "outbox: {} unsent, {} parked, {} sent but never seen on the broker",
                a.outbox_unsent, a.outbox_parked, a.outbox_unpublished
            ),
        );
        check(
            !self.crashes.is_empty(),
            format!(
                "replicas died on their own: {}",
                self.crashes
                    .iter()
                    .map(|c| format!("{} ({})", c.replica, c.status))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        check(
            !self.faults.failures.is_empty(),
            format!("faults not injected: {}", self.faults.failures.join("; ")),
        );
        check(
            a.latency_others_during_outage.p99 > OTHERS_P99_DURING_OUTAGE,
            format!(
                "while one building's systems were out, the other buildings' bookings took {} to their first outcome (p99 must stay under {:?})",
                a.latency_others_during_outage, OTHERS_P99_DURING_OUTAGE
            ),
        );
        self.violations = v;
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.audit;
        let l = &self.load;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, value: String| {
            writeln!(f, "| {name:<58} | {value:>14} |")
        };
        let rule =
            "|------------------------------------------------------------|----------------|";
        writeln!(
            f,
            "\nconnecX soak — seed {}, {} replicas of each service, {:.0} requests/s asked",
            self.seed, self.replicas, self.rate
        )?;
        writeln!(f, "\n| {:<58} | {:>14} |", "load", "")?;
        writeln!(f, "{rule}")?;
        row(
            f,
            "bookings accepted (visitor + facility)",
            format!("{} + {}", l.visitor_bookings, l.facility_bookings),
        )?;
        row(
            f,
            "  of which deliberate double bookings",
            l.double_bookings.to_string(),
        )?;
        row(
            f,
            "reschedules (PATCH) / cancellations (DELETE)",
            format!("{} / {}", l.reschedules, l.cancellations),
        )?;
        row(
            f,
            "load duration / achieved requests per second",
            format!(
                "{} / {:.1}",
                secs(l.elapsed),
                l.requests() as f64 / l.elapsed.as_secs_f64().max(0.001)
            ),
        )?;
        row(
            f,
            "requests retried (5xx / broken connection)",
            format!(
                "{} ({} / {})",
                l.retried, l.server_errors, l.transport_errors
            ),
        )?;
        row(f, "unexpected answers", l.unexpected.to_string())?;
        row(
            f,
            "drain after the load",
            format!(
                "{}{}",
                secs(self.drain),
                if self.drain_timed_out { " TIMEOUT" } else { "" }
            ),
        )?;
        row(f, "whole run", secs(self.total))?;

        let fl = &self.faults;
        writeln!(f, "\n| {:<58} | {:>14} |", "faults injected", "")?;
        writeln!(f, "{rule}")?;
        row(
            f,
            "vhost connections force-closed (times / connections)",
            format!("{} / {}", fl.connection_closes, fl.connections_closed),
        )?;
        row(
            f,
            "broker stop_app/start_app",
            fl.broker_restarts.to_string(),
        )?;
        row(
            f,
            "worker replicas SIGKILLed and restarted",
            fl.worker_kills.len().to_string(),
        )?;
        row(
            f,
            "SMTP refusing (times / total)",
            format!("{} / {}", fl.smtp_outages, secs(fl.smtp_refusing)),
        )?;
        row(
            f,
            "pg_terminate_backend (times / connections)",
            format!("{} / {}", fl.pg_terminations, fl.backends_terminated),
        )?;
        row(
            f,
            "simulator fault windows",
            fl.sim_fault_windows.to_string(),
        )?;
        row(
            f,
            "outages of one building's own iPassan and Salto",
            format!(
                "{} / {}",
                fl.building_outages.len(),
                secs(
                    fl.building_outages
                        .iter()
                        .map(|(from, to)| (*to - *from).to_std().unwrap_or_default())
                        .sum()
                )
            ),
        )?;
        for ((sim, kind), n) in &fl.sim_faults_injected {
            row(f, &format!("  {sim} {kind} injected"), n.to_string())?;
        }
        for (sim, n) in &fl.sim_faults_served {
            let seen = fl.sim_requests.get(sim).copied().unwrap_or(0);
            row(
                f,
                &format!("  {sim} requests answered by a fault / all"),
                format!("{n} / {seen}"),
            )?;
        }

        writeln!(
            f,
            "\ncreated → first access outcome (bookings asking for access):"
        )?;
        writeln!(
            f,
            "  other buildings, during the outages: {}",
            a.latency_others_during_outage
        )?;
        writeln!(
            f,
            "  other buildings, whole run:          {}",
            a.latency_others
        )?;
        writeln!(
            f,
            "  the building on its own systems:     {}",
            a.latency_own
        )?;

        writeln!(f, "\n| {:<58} | {:>14} |", "audit", "")?;
        writeln!(f, "{rule}")?;
        row(
            f,
            "bookings in booking-api (visitor + facility)",
            format!("{} + {}", a.visitor_bookings, a.facility_bookings),
        )?;
        row(
            f,
            "  live / cancelled",
            format!("{} / {}", a.live_bookings, a.cancelled_bookings),
        )?;
        for (status, n) in &a.statuses {
            row(f, &format!("  {status}"), n.to_string())?;
        }
        row(
            f,
            "bookings differing from what the client was told (0)",
            a.client_mismatches.to_string(),
        )?;
        row(
            f,
            "bookings in a wrong final access state (0)",
            format!("{} ({} explained)", a.wrong_state, a.wrong_state_explained),
        )?;
        row(
            f,
            "stale grants: in a simulator without a live booking (0)",
            a.stale_grants.to_string(),
        )?;
        row(
            f,
            "missing grants: live booking without its grant (0)",
            a.missing_grants.to_string(),
        )?;
        row(
            f,
            "  of those explained by a dead letter",
            a.stale_explained.to_string(),
        )?;
        row(
            f,
            "duplicate grants / duplicate visitors (0)",
            format!("{} / {}", a.duplicate_grants, a.duplicate_visitors),
        )?;
        row(
            f,
            "emails sent / duplicate emails",
            format!("{} / {}", a.mails, a.duplicate_mails),
        )?;
        row(
            f,
            "  connection down / works again (managers)",
            format!("{} / {}", a.outage_mails.0, a.outage_mails.1),
        )?;
        row(
            f,
            "dead letters / with an alert email (all)",
            format!("{} / {}", a.dead_letters, a.dead_letters_alerted),
        )?;
        for (kind, n) in &a.dead_letters_by_kind {
            row(f, &format!("  {kind}"), n.to_string())?;
        }
        row(
            f,
            "dead letters parked or never stored (0)",
            (a.parked + a.dead_letters_unstored).to_string(),
        )?;
        row(
            f,
            "outbox unsent / parked / never on the broker (0)",
            format!(
                "{} / {} / {}",
                a.outbox_unsent, a.outbox_parked, a.outbox_unpublished
            ),
        )?;
        writeln!(
            f,
            "\n| {:<40} | {:>9} | {:>9} | {:>9} | {:>6} |",
            "messages per queue", "published", "handled", "dead", "lost"
        )?;
        writeln!(
            f,
            "|------------------------------------------|-----------|-----------|-----------|--------|"
        )?;
        for (queue, fate) in &a.queues {
            writeln!(
                f,
                "| {queue:<40} | {:>9} | {:>9} | {:>9} | {:>6} |",
                fate.published, fate.handled, fate.dead_lettered, fate.lost
            )?;
        }
        if !self.crashes.is_empty() {
            writeln!(f, "\nreplicas that died on their own:")?;
            for crash in &self.crashes {
                writeln!(f, "  {} ({}); last lines:", crash.replica, crash.status)?;
                for line in crash.last_lines.iter().rev().take(8).rev() {
                    writeln!(f, "    {line}")?;
                }
            }
        }
        if !self.error_lines.is_empty() {
            let counts: Vec<String> = self
                .error_lines
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect();
            writeln!(
                f,
                "\nERROR log lines (expected under faults): {}",
                counts.join(", ")
            )?;
            for sample in self.error_samples.iter().take(5) {
                writeln!(f, "  e.g. {sample}")?;
            }
        }
        if !a.samples.is_empty() {
            writeln!(f, "\nexamples:")?;
            for sample in &a.samples {
                writeln!(f, "  - {sample}")?;
            }
        }
        if !a.outage_mail_lines.is_empty() {
            writeln!(f, "\nconnection down / works again mails:")?;
            for line in &a.outage_mail_lines {
                writeln!(f, "  - {line}")?;
            }
        }
        if !a.duplicate_mail_samples.is_empty() {
            writeln!(f, "\nduplicate emails (reported, not a violation):")?;
            for sample in &a.duplicate_mail_samples {
                writeln!(f, "  - {sample}")?;
            }
        }
        if !l.unexpected_samples.is_empty() {
            writeln!(f, "\nunexpected answers:")?;
            for sample in &l.unexpected_samples {
                writeln!(f, "  - {sample}")?;
            }
        }
        if !fl.timeline.is_empty() {
            writeln!(f, "\nfault timeline:")?;
            for line in &fl.timeline {
                writeln!(f, "  {line}")?;
            }
        }
        if self.violations.is_empty() {
            writeln!(f, "\nPASSED: no violation.")
        } else {
            writeln!(f, "\nFAILED: {} violation(s):", self.violations.len())?;
            for violation in &self.violations {
                writeln!(f, "  - {violation}")?;
            }
            Ok(())
        }
    }
}

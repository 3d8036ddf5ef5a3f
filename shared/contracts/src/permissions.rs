//! Who may do what on the broker (docs/architecture.md, "Messaging topology"): each service
//! connects to RabbitMQ as a user of its own, allowed only what its part of the topology needs.
//!
//! RabbitMQ grants a user, per vhost, three regular expressions matched against the names of
//! exchanges and queues alike: **configure** (declare and delete), **write** (publish to an
//! exchange; be the destination of a binding) and **read** (consume, get or purge a queue; be the
//! source of a binding). Publishing to the default exchange is checked as writing to
//! `amq.default`, and declaring a queue with a dead-letter exchange as reading the queue and writing
//! to that exchange. A passive declaration is not checked at all (RabbitMQ 3.10): anyone on the
//! vhost may learn whether a queue exists and how deep it is, no more. The expressions below
//! follow, through those rules, from what
//! `platform::amqp::topology` and the worker runtime do with the queues a service consumes and the
//! exchanges it publishes to — so they are written once, here, from the same names, and the ops
//! definitions file and the test broker both take them from [`broker_permissions`].
//!
//! What the model cannot narrow: a service that republishes to its retry tiers through the default
//! exchange could publish to any queue that way (RabbitMQ has no per-routing-key write check on
//! `amq.default`); and since exchanges and queues share one namespace, the notifier's right to bind
//! from the parking exchange `connecx.parked` is also the right to read the parking queue of the
//! same name — it is the service that owns dead letters.

use std::fmt;

use crate::topology::{
    BOOKING_API_RESULTS_QUEUE, DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, IPASSAN_SYNC_QUEUE,
    NOTIFIER_DEAD_LETTERS_QUEUE, NOTIFIER_QUEUE, PARKING_EXCHANGE, PARKING_QUEUE, QueueSpec,
    SALTO_SYNC_QUEUE,
};

/// The name RabbitMQ checks publishing to the default exchange (`""`) against.
pub const DEFAULT_EXCHANGE_RESOURCE: &str = "amq.default";

/// A service that talks to the broker, each as its own user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    BookingApi,
    IpassanSync,
    SaltoSync,
    Notifier,
}

impl Service {
    pub const ALL: [Service; 4] = [
        Service::BookingApi,
        Service::IpassanSync,
        Service::SaltoSync,
        Service::Notifier,
    ];

    /// The service's name, as its crate and binary are called.
    pub fn name(self) -> &'static str {
        match self {
            Service::BookingApi => "booking-api",
            Service::IpassanSync => "ipassan-sync",
            Service::SaltoSync => "salto-sync",
            Service::Notifier => "notifier",
        }
    }

    /// The service named `name` (`booking-api`, `ipassan-sync`, `salto-sync`, `notifier`).
    pub fn from_name(name: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The RabbitMQ user the service connects as.
    pub fn broker_user(self) -> &'static str {
        match self {
            Service::BookingApi => "connecx-booking-api",
            Service::IpassanSync => "connecx-ipassan-sync",
            Service::SaltoSync => "connecx-salto-sync",
            Service::Notifier => "connecx-notifier",
        }
    }

    /// The queues the service consumes (each with its retry tiers).
    pub fn consumes(self) -> &'static [QueueSpec] {
        match self {
            Service::BookingApi => &[BOOKING_API_RESULTS_QUEUE],
            Service::IpassanSync => &[IPASSAN_SYNC_QUEUE],
            Service::SaltoSync => &[SALTO_SYNC_QUEUE],
            Service::Notifier => &[NOTIFIER_QUEUE, NOTIFIER_DEAD_LETTERS_QUEUE],
        }
    }

    /// Whether the service publishes events to [`EVENTS_EXCHANGE`]: booking-api its bookings,
    /// the two workers their results and their systems' outages. The notifier only listens.
    pub fn publishes_events(self) -> bool {
        self != Service::Notifier
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A user's permissions on one vhost: anchored regular expressions over resource names, as
/// `rabbitmqctl set_permissions` and the definitions file take them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerPermissions {
    pub configure: String,
    pub write: String,
    pub read: String,
}

/// The least `service` needs on the broker.
pub fn broker_permissions(service: Service) -> BrokerPermissions {
    let (mut configure, mut write, mut read) = (Names::new(), Names::new(), Names::new());
    // Exchanges first. Every publisher and worker connection declares those services publish to.
    configure.add(Name::Exact(EVENTS_EXCHANGE));
    configure.add(Name::Exact(DEAD_LETTER_EXCHANGE));
    if service.publishes_events() {
        write.add(Name::Exact(EVENTS_EXCHANGE));
    }
    // Dead letters: a worker's, and those a service makes itself (outbox, nightly clearing).
    write.add(Name::Exact(DEAD_LETTER_EXCHANGE));
    for queue in service.consumes() {
        // Named as the queue's dead-letter exchange when it is declared, and dead-lettered to.
        write.add(Name::Exact(queue.dead_letter_exchange));
        // The retry tiers dead-letter back through the default exchange, and the worker
        // republishes to them through it (as the notifier's dead-letter replay does).
        write.add(Name::Exact(DEFAULT_EXCHANGE_RESOURCE));
        // The source of the queue's bindings.
        read.add(Name::Exact(queue.exchange));
        if queue.dead_letter_exchange == PARKING_EXCHANGE {
            // A queue that parks its failures declares the parking exchange and binds its queue.
            configure.add(Name::Exact(PARKING_EXCHANGE));
            read.add(Name::Exact(PARKING_EXCHANGE));
        }
    }
    // Then queues: each declared with a dead-letter exchange (configure, read), bound
    // (write) and consumed (read); its retry tiers declared the same way.
    for queue in service.consumes() {
        let work = Name::Exact(queue.name);
        let tiers = Name::RetryTiersOf(queue.name);
        configure.add(work);
        configure.add(tiers);
        write.add(work);
        read.add(work);
        read.add(tiers);
        if queue.dead_letter_exchange == PARKING_EXCHANGE {
            configure.add(Name::Exact(PARKING_QUEUE));
            write.add(Name::Exact(PARKING_QUEUE));
        }
    }
    BrokerPermissions {
        configure: configure.pattern(),
        write: write.pattern(),
        read: read.pattern(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    Exact(&'static str),
    /// `<queue>.retry.<n>`, n from 1 ([`crate::retry_queue_name`]).
    RetryTiersOf(&'static str),
}

/// Resource names in the order first needed, each once.
struct Names(Vec<Name>);

impl Names {
    fn new() -> Self {
        Names(Vec::new())
    }

    fn add(&mut self, name: Name) {
        if !self.0.contains(&name) {
            self.0.push(name);
        }
    }

    /// `^(a|b|…)$`; RabbitMQ reads an empty expression as "nothing".
    fn pattern(&self) -> String {
        let alternatives: Vec<String> = self
            .0
            .iter()
            .map(|name| match name {
                Name::Exact(name) => escape(name),
                Name::RetryTiersOf(queue) => format!(r"{}\.retry\.[1-9][0-9]*", escape(queue)),
            })
            .collect();
        if alternatives.is_empty() {
            String::new()
        } else {
            format!("^({})$", alternatives.join("|"))
        }
    }
}

/// A name as a regular expression matching exactly it.
fn escape(name: &str) -> String {
    let mut escaped = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use regex::Regex;

    use super::*;
    use crate::topology::{ALL_QUEUES, retry_queue_name};

    struct Compiled {
        configure: Regex,
        write: Regex,
        read: Regex,
    }

    fn compiled(service: Service) -> Compiled {
        let permissions = broker_permissions(service);
        let regex = |pattern: &str| {
            Regex::new(pattern).unwrap_or_else(|e| panic!("{service}: {pattern:?}: {e}"))
        };
        Compiled {
            configure: regex(&permissions.configure),
            write: regex(&permissions.write),
            read: regex(&permissions.read),
        }
    }

    /// A queue and its first tiers (more than any deployment configures).
    fn queue_and_tiers(queue: &str) -> Vec<String> {
        let mut names = vec![queue.to_owned()];
        names.extend((1..=12).map(|tier| retry_queue_name(queue, tier)));
        names
    }

    #[test]
    fn each_service_may_declare_bind_consume_and_publish_what_its_topology_needs() {
        for service in Service::ALL {
            let may = compiled(service);
            for exchange in [EVENTS_EXCHANGE, DEAD_LETTER_EXCHANGE] {
                assert!(
                    may.configure.is_match(exchange),
                    "{service} declares {exchange}"
                );
            }
            assert!(
                may.write.is_match(DEAD_LETTER_EXCHANGE),
                "{service} dead-letters"
            );
            assert_eq!(
                may.write.is_match(EVENTS_EXCHANGE),
                service.publishes_events(),
                "{service} publishes events"
            );
            for queue in service.consumes() {
                for name in queue_and_tiers(queue.name) {
                    assert!(may.configure.is_match(&name), "{service} declares {name}");
                    assert!(may.read.is_match(&name), "{service} reads {name}");
                }
                assert!(
                    may.write.is_match(queue.name),
                    "{service} binds {}",
                    queue.name
                );
                assert!(
                    may.read.is_match(queue.exchange),
                    "{service} binds from {}",
                    queue.exchange
                );
                assert!(
                    may.write.is_match(queue.dead_letter_exchange),
                    "{service} dead-letters {} to {}",
                    queue.name,
                    queue.dead_letter_exchange
                );
                assert!(
                    may.write.is_match(DEFAULT_EXCHANGE_RESOURCE),
                    "{service} retries through the default exchange"
                );
            }
        }
        let notifier = compiled(Service::Notifier);
        assert!(notifier.configure.is_match(PARKING_EXCHANGE));
        assert!(notifier.configure.is_match(PARKING_QUEUE));
        assert!(
            notifier.write.is_match(PARKING_QUEUE),
            "binds the parking queue"
        );
        assert!(
            notifier.read.is_match(PARKING_EXCHANGE),
            "binds from the parking exchange"
        );
    }

    #[test]
    fn every_queue_of_the_system_is_consumed_by_exactly_one_service() {
        for queue in ALL_QUEUES {
            let consumers: Vec<Service> = Service::ALL
                .into_iter()
                .filter(|s| s.consumes().contains(&queue))
                .collect();
            assert_eq!(consumers.len(), 1, "{}: {consumers:?}", queue.name);
        }
    }

    #[test]
    fn no_service_may_touch_another_services_queues() {
        for service in Service::ALL {
            let may = compiled(service);
            let others = ALL_QUEUES
                .iter()
                .filter(|queue| !service.consumes().contains(queue));
            for queue in others {
                for name in queue_and_tiers(queue.name) {
                    for (right, regex) in [
                        ("configure", &may.configure),
                        ("write", &may.write),
                        ("read", &may.read),
                    ] {
                        assert!(!regex.is_match(&name), "{service} may {right} {name}");
                    }
                }
            }
        }
    }

    #[test]
    fn only_the_notifier_may_touch_the_parking_exchange_and_queue() {
        for service in [
            Service::BookingApi,
            Service::IpassanSync,
            Service::SaltoSync,
        ] {
            let may = compiled(service);
            assert!(!may.configure.is_match(PARKING_QUEUE), "{service}");
            assert!(!may.write.is_match(PARKING_QUEUE), "{service}");
            assert!(!may.read.is_match(PARKING_QUEUE), "{service}");
        }
    }

    #[test]
    fn the_expressions_match_whole_names_only() {
        let ipassan = compiled(Service::IpassanSync);
        for near_miss in [
            "ipassan-sync2",
            "my-ipassan-sync",
            "ipassan-sync.retry.",
            "ipassan-sync.retry.0",
            "ipassan-sync.retry.1x",
            "ipassan-syncXretryX1",
            "connecx-events",
            "connecx.events.copy",
            "amq.direct",
        ] {
            assert!(
                !ipassan.configure.is_match(near_miss),
                "configure {near_miss}"
            );
            assert!(!ipassan.write.is_match(near_miss), "write {near_miss}");
            assert!(!ipassan.read.is_match(near_miss), "read {near_miss}");
        }
    }

    #[test]
    fn the_permissions_read_as_a_person_would_write_them() {
        assert_eq!(
            broker_permissions(Service::IpassanSync),
            BrokerPermissions {
                configure: r"^(connecx\.events|connecx\.dead|ipassan-sync|ipassan-sync\.retry\.[1-9][0-9]*)$".into(),
                write: r"^(connecx\.events|connecx\.dead|amq\.default|ipassan-sync)$".into(),
                read: r"^(connecx\.events|ipassan-sync|ipassan-sync\.retry\.[1-9][0-9]*)$".into(),
            }
        );
    }

    #[test]
    fn each_service_has_a_user_of_its_own() {
        let users: Vec<&str> = Service::ALL.iter().map(|s| s.broker_user()).collect();
        assert_eq!(
            users,
            [
                "connecx-booking-api",
                "connecx-ipassan-sync",
                "connecx-salto-sync",
                "connecx-notifier"
            ]
        );
        for service in Service::ALL {
            assert_eq!(Service::from_name(service.name()), Some(service));
        }
    }
}

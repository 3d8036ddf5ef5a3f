//! The rules of booking-api as plain functions of their inputs: identifiers, field validation,
//! booking windows and the local-day rule, and how result events change a booking's access.
//! No I/O here, so every rule is unit-tested without a database or a broker.

pub mod access;
pub mod ids;
pub mod validation;
pub mod window;

//! `notifier migrate`, the deployment's migration step, run as the real binary with only the
//! database URL in its environment.

testkit::migrate_command_tests!(env!("CARGO_BIN_EXE_notifier"), notifier::SCHEMA);

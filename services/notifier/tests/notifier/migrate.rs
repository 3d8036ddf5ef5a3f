//! `notifier migrate`, the deployment's migration step, run as the real binary with only the
//! database URL in its environment.

use testkit::MigrateCommand;

const MIGRATE: MigrateCommand = MigrateCommand {
    binary: env!("CARGO_BIN_EXE_notifier"),
    schema: notifier::SCHEMA,
    migrations: concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"),
};

#[tokio::test]
async fn migrate_applies_every_migration_to_a_fresh_database_and_a_second_run_changes_nothing() {
    MIGRATE
        .migrates_a_fresh_database_then_has_nothing_left_to_do()
        .await;
}

#[tokio::test]
async fn migrate_fails_naming_the_database_when_it_is_unreachable() {
    MIGRATE.fails_naming_an_unreachable_database().await;
}

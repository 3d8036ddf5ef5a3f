-- A table for the start tests (shared/platform/tests/database_start.rs).
CREATE TABLE started (id int PRIMARY KEY);

-- The nightly reconciliation asks, once per building and night, which zones connecX manages for
-- the buildings with bookings on its access levels (store::bookings::managed_zones), and an alert
-- looks for a snapshot of a building (store::bookings::snapshot_for_alert). Without these, each
-- such look reads every stored snapshot (about 0.3 s at 200,000 snapshots, once per building: a
-- fleet's night spent most of its time there).
CREATE INDEX booking_snapshots_building
    ON booking_snapshots ((envelope #>> '{data,building,id}'));
CREATE INDEX booking_snapshots_access_level
    ON booking_snapshots ((envelope #>> '{data,apartment,access_level_id}'));

-- The compose stack's passwords for the services' roles (local use only; run after roles.sql by
-- the postgres image's /docker-entrypoint-initdb.d on a fresh volume).
ALTER ROLE connecx_booking_api PASSWORD 'connecx-booking-api';
ALTER ROLE connecx_ipassan_sync PASSWORD 'connecx-ipassan-sync';
ALTER ROLE connecx_salto_sync PASSWORD 'connecx-salto-sync';
ALTER ROLE connecx_notifier PASSWORD 'connecx-notifier';

-- A resident's live facility bookings are counted at each new one (CONNECX__LIMITS__MAX_LIVE_BOOKINGS).
CREATE INDEX facility_bookings_by_booker ON facility_bookings (building_id, booked_by_user_id, ends_at)
    WHERE state = 'booked' AND booked_by_role = 'resident';

//! The XML shapes of SHIP (docs/contracts/salto-ship.md), as serde types for quick-xml. They stay
//! inside the client: the rest of the service sees [`super::Group`], [`super::ZonePermission`]
//! and friends. Values travel as text and are read by the client, so an odd value is a clear
//! protocol error rather than a panic; unknown elements in answers are ignored.

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize)]
#[serde(rename = "RequestCall")]
pub struct RequestCall<P: Serialize> {
    #[serde(rename = "RequestName")]
    pub request_name: &'static str,
    #[serde(rename = "Params")]
    pub params: P,
}

#[derive(Debug, Deserialize)]
pub struct RequestResponse<P> {
    #[serde(rename = "RequestName")]
    pub request_name: Option<String>,
    #[serde(rename = "Params")]
    pub params: Option<P>,
    #[serde(rename = "Exception")]
    pub exception: Option<Exception>,
}

#[derive(Debug, Deserialize)]
pub struct Exception {
    #[serde(rename = "Code")]
    pub code: Option<String>,
    #[serde(rename = "Message")]
    pub message: Option<String>,
}

/// Params of answers that carry nothing we read.
#[derive(Debug, Default, Deserialize)]
pub struct NoParams {}

#[derive(Debug, Serialize)]
pub struct GroupId<'a> {
    #[serde(rename = "ExtGroupID")]
    pub ext_group_id: &'a str,
}

#[derive(Debug, Serialize)]
pub struct GroupUpdate {
    #[serde(rename = "SaltoDBGroup")]
    pub group: Group,
}

#[derive(Debug, Default, Deserialize)]
pub struct GroupAnswer {
    #[serde(rename = "SaltoDBGroup")]
    pub group: Option<Group>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Group {
    #[serde(rename = "ExtGroupID")]
    pub ext_group_id: Option<String>,
    #[serde(rename = "Name", skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "GroupZoneList", default)]
    pub zones: GroupZoneList,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct GroupZoneList {
    #[serde(rename = "SaltoDB.AccessPermission.Group_Zone", default)]
    pub entries: Vec<GroupZone>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct GroupZone {
    #[serde(rename = "ExtZoneID")]
    pub ext_zone_id: Option<String>,
    #[serde(rename = "TimezoneTableID", skip_serializing_if = "Option::is_none")]
    pub timezone_table_id: Option<String>,
    #[serde(rename = "UsePeriod")]
    pub use_period: Option<String>,
    #[serde(rename = "Period", skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Period {
    #[serde(rename = "StartDate")]
    pub start_date: Option<String>,
    #[serde(rename = "EndDate")]
    pub end_date: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TimetableId {
    #[serde(rename = "TimezoneTableID")]
    pub id: u32,
}

#[derive(Debug, Serialize)]
pub struct TimetableInsert {
    #[serde(rename = "SaltoDBTimezoneTable")]
    pub table: Timetable,
}

#[derive(Debug, Default, Deserialize)]
pub struct TimetableAnswer {
    #[serde(rename = "SaltoDBTimezoneTable")]
    pub table: Option<Timetable>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Timetable {
    #[serde(rename = "TimezoneTableID")]
    pub id: Option<String>,
    #[serde(rename = "Name")]
    pub name: Option<String>,
    #[serde(rename = "TimezoneList", default)]
    pub list: TimezoneList,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct TimezoneList {
    #[serde(rename = "Timezone", default)]
    pub timezones: Vec<Timezone>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Timezone {
    #[serde(rename = "StartTime")]
    pub start: Option<String>,
    #[serde(rename = "EndTime")]
    pub end: Option<String>,
    #[serde(rename = "Monday")]
    pub monday: Option<String>,
    #[serde(rename = "Tuesday")]
    pub tuesday: Option<String>,
    #[serde(rename = "Wednesday")]
    pub wednesday: Option<String>,
    #[serde(rename = "Thursday")]
    pub thursday: Option<String>,
    #[serde(rename = "Friday")]
    pub friday: Option<String>,
    #[serde(rename = "Saturday")]
    pub saturday: Option<String>,
    #[serde(rename = "Sunday")]
    pub sunday: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ZoneListRead<'a> {
    #[serde(rename = "MaxCount")]
    pub max_count: u32,
    #[serde(
        rename = "StartingFromExtZoneID",
        skip_serializing_if = "Option::is_none"
    )]
    pub starting_from: Option<&'a str>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ZoneListAnswer {
    #[serde(rename = "SaltoDBZoneList", default)]
    pub list: ZoneList,
    #[serde(rename = "EOF")]
    pub eof: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ZoneList {
    #[serde(rename = "SaltoDBZone", default)]
    pub zones: Vec<Zone>,
}

#[derive(Debug, Deserialize)]
pub struct Zone {
    #[serde(rename = "ExtZoneID")]
    pub ext_zone_id: Option<String>,
    #[serde(rename = "Name")]
    pub name: Option<String>,
}

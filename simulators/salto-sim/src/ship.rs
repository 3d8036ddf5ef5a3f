//! The SHIP side of the simulator: reads one XML `RequestCall`, applies it to the database under
//! the contract's rules, and writes the `RequestResponse` — HTTP 200 even for errors, the error
//! being `<Exception><Code>` in the body. Malformed XML is code 500, an unknown request 501, a
//! request without its `Params` 502.
//!
//! The wire shapes here are the simulator's own reading of docs/contracts/salto-ship.md, written apart
//! from salto-sync's client so that a drift between either and the contract shows up in tests.

use chrono::NaiveDateTime;
use quick_xml::escape::escape;
use serde::Deserialize;

use crate::model::{
    Database, GroupZone, Interval, Period, Refusal, Timetable, date_time, day_time,
};

/// The request names this simulator answers.
pub const ZONE_LIST_READ: &str = "SaltoDBZoneList.Read";
pub const TIMETABLE_INSERT: &str = "SaltoDBTimezoneTable.Insert";
pub const TIMETABLE_READ: &str = "SaltoDBTimezoneTable.Read";
pub const TIMETABLE_DELETE: &str = "SaltoDBTimezoneTable.Delete";
pub const GROUP_READ: &str = "SaltoDBGroup.Read";
pub const GROUP_UPDATE: &str = "SaltoDBGroup.Update";

#[derive(Debug, Deserialize)]
struct Call {
    #[serde(rename = "RequestName")]
    request_name: Option<String>,
    #[serde(rename = "Params")]
    params: Option<Params>,
}

/// Every parameter any request takes; each request reads the ones it needs.
#[derive(Debug, Default, Deserialize)]
struct Params {
    #[serde(rename = "MaxCount")]
    max_count: Option<String>,
    #[serde(rename = "StartingFromExtZoneID")]
    starting_from: Option<String>,
    #[serde(rename = "TimezoneTableID")]
    timetable_id: Option<String>,
    #[serde(rename = "SaltoDBTimezoneTable")]
    timetable: Option<WireTimetable>,
    #[serde(rename = "ExtGroupID")]
    group_id: Option<String>,
    #[serde(rename = "SaltoDBGroup")]
    group: Option<WireGroup>,
}

#[derive(Debug, Deserialize)]
struct WireTimetable {
    #[serde(rename = "TimezoneTableID")]
    id: Option<String>,
    #[serde(rename = "Name")]
    name: Option<String>,
    #[serde(rename = "TimezoneList")]
    list: Option<WireTimezoneList>,
}

#[derive(Debug, Deserialize)]
struct WireTimezoneList {
    #[serde(rename = "Timezone", default)]
    timezones: Vec<WireTimezone>,
}

#[derive(Debug, Deserialize)]
struct WireTimezone {
    #[serde(rename = "StartTime")]
    start: Option<String>,
    #[serde(rename = "EndTime")]
    end: Option<String>,
    #[serde(rename = "Monday")]
    monday: Option<String>,
    #[serde(rename = "Tuesday")]
    tuesday: Option<String>,
    #[serde(rename = "Wednesday")]
    wednesday: Option<String>,
    #[serde(rename = "Thursday")]
    thursday: Option<String>,
    #[serde(rename = "Friday")]
    friday: Option<String>,
    #[serde(rename = "Saturday")]
    saturday: Option<String>,
    #[serde(rename = "Sunday")]
    sunday: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireGroup {
    #[serde(rename = "ExtGroupID")]
    id: Option<String>,
    #[serde(rename = "Name")]
    name: Option<String>,
    #[serde(rename = "GroupZoneList")]
    list: Option<WireGroupZoneList>,
}

#[derive(Debug, Deserialize)]
struct WireGroupZoneList {
    #[serde(rename = "SaltoDB.AccessPermission.Group_Zone", default)]
    entries: Vec<WireGroupZone>,
}

#[derive(Debug, Deserialize)]
struct WireGroupZone {
    #[serde(rename = "ExtZoneID")]
    zone: Option<String>,
    #[serde(rename = "TimezoneTableID")]
    timetable: Option<String>,
    #[serde(rename = "UsePeriod")]
    use_period: Option<String>,
    #[serde(rename = "Period")]
    period: Option<WirePeriod>,
}

#[derive(Debug, Deserialize)]
struct WirePeriod {
    #[serde(rename = "StartDate")]
    start: Option<String>,
    #[serde(rename = "EndDate")]
    end: Option<String>,
}

/// A parsed request: its name (for logs and fault matching) and what to do.
pub struct Request {
    pub name: String,
    call: Result<Params, Refusal>,
}

/// Reads the envelope. `Err` = the body is not a SHIP request at all (code 500).
pub fn parse(body: &str) -> Result<Request, Refusal> {
    let root = root_name(body)?;
    if root != "RequestCall" {
        return Err(Refusal::new(
            500,
            format!("the root element must be RequestCall, not {root}"),
        ));
    }
    let call: Call = quick_xml::de::from_str(body)
        .map_err(|e| Refusal::new(500, format!("malformed request XML: {e}")))?;
    let name = call
        .request_name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Refusal::new(500, "RequestName is missing"))?;
    let call = call
        .params
        .ok_or_else(|| Refusal::new(502, format!("{name} needs a Params element")));
    Ok(Request { name, call })
}

fn root_name(body: &str) -> Result<String, Refusal> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(body);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                let name = e.name();
                let name: &str = name.as_ref();
                return Ok(name.to_owned());
            }
            Ok(Event::Eof) => return Err(Refusal::new(500, "the body holds no XML element")),
            Ok(Event::Text(t)) if !t.xml10_content().trim().is_empty() => {
                return Err(Refusal::new(500, "text before the root element"));
            }
            Ok(_) => {}
            Err(e) => return Err(Refusal::new(500, format!("malformed request XML: {e}"))),
        }
    }
}

/// Applies a request to the database; `Ok` holds the inner XML of the answer's `Params`.
pub fn apply(db: &mut Database, request: &Request) -> Result<String, Refusal> {
    let params = request.call.as_ref().map_err(Clone::clone)?;
    match request.name.as_str() {
        ZONE_LIST_READ => read_zones(db, params),
        TIMETABLE_INSERT => {
            let wire = params
                .timetable
                .as_ref()
                .ok_or_else(|| Refusal::invalid("SaltoDBTimezoneTable is missing"))?;
            db.insert_timetable(timetable_from_wire(wire)?)?;
            Ok(String::new())
        }
        TIMETABLE_READ => {
            let id = required_id(params.timetable_id.as_deref(), "TimezoneTableID")?;
            let timetable = db
                .timetables
                .get(&id)
                .ok_or_else(|| Refusal::not_found(format!("timetable {id} does not exist")))?;
            Ok(timetable_xml(timetable))
        }
        TIMETABLE_DELETE => {
            let id = required_id(params.timetable_id.as_deref(), "TimezoneTableID")?;
            db.delete_timetable(id)?;
            Ok(String::new())
        }
        GROUP_READ => {
            let id = params
                .group_id
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| Refusal::invalid("ExtGroupID is missing"))?;
            let group = db.groups.get(id).ok_or_else(|| {
                Refusal::not_found(format!("group (access level) `{id}` does not exist"))
            })?;
            Ok(group_xml(group))
        }
        GROUP_UPDATE => {
            let wire = params
                .group
                .as_ref()
                .ok_or_else(|| Refusal::invalid("SaltoDBGroup is missing"))?;
            let id = wire
                .id
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| Refusal::invalid("SaltoDBGroup has no ExtGroupID"))?
                .to_owned();
            let zones = match &wire.list {
                Some(list) => list
                    .entries
                    .iter()
                    .map(group_zone_from_wire)
                    .collect::<Result<Vec<_>, _>>()?,
                // Without a list the permissions stay as they are; only the name may change.
                None => db
                    .groups
                    .get(&id)
                    .map(|g| g.zones.clone())
                    .unwrap_or_default(),
            };
            db.replace_group_zones(&id, wire.name.clone(), zones)?;
            Ok(String::new())
        }
        other => Err(Refusal::new(501, format!("unknown request {other}"))),
    }
}

/// The answer document.
pub fn response(name: &str, outcome: &Result<String, Refusal>) -> String {
    let name = escape(name);
    match outcome {
        Ok(params) => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<RequestResponse><RequestName>{name}</RequestName><Params>{params}</Params></RequestResponse>"
        ),
        Err(refusal) => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<RequestResponse><RequestName>{name}</RequestName><Exception><Code>{}</Code><Message>{}</Message></Exception></RequestResponse>",
            refusal.code,
            escape(refusal.message.as_str())
        ),
    }
}

fn read_zones(db: &Database, params: &Params) -> Result<String, Refusal> {
    let max = match params.max_count.as_deref().map(str::trim) {
        None | Some("") => 100,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                Refusal::invalid(format!("MaxCount `{text}` is not a positive count"))
            })?,
    };
    let after = params
        .starting_from
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    // Paging continues after the last ExtZoneID returned: the starting one is not repeated.
    let mut remaining = db
        .zones
        .values()
        .filter(|z| after.is_none_or(|a| z.ext_id.as_str() > a));
    let page: Vec<_> = remaining.by_ref().take(max).collect();
    let eof = remaining.next().is_none();
    let zones: String = page
        .iter()
        .map(|z| {
            format!(
                "<SaltoDBZone><ExtZoneID>{}</ExtZoneID><Name>{}</Name></SaltoDBZone>",
                escape(z.ext_id.as_str()),
                escape(z.name.as_str())
            )
        })
        .collect();
    Ok(format!(
        "<SaltoDBZoneList>{zones}</SaltoDBZoneList><EOF>{}</EOF>",
        u8::from(eof)
    ))
}

fn required_id(text: Option<&str>, what: &str) -> Result<u32, Refusal> {
    let text = text
        .map(str::trim)
        .ok_or_else(|| Refusal::invalid(format!("{what} is missing")))?;
    text.parse()
        .map_err(|_| Refusal::invalid(format!("{what} `{text}` is not a number")))
}

fn flag(text: Option<&str>, what: &str) -> Result<bool, Refusal> {
    match text.map(str::trim) {
        None | Some("") | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(other) => Err(Refusal::invalid(format!(
            "{what} must be 0 or 1, not `{other}`"
        ))),
    }
}

fn date(text: Option<&str>, what: &str) -> Result<NaiveDateTime, Refusal> {
    let text = text.ok_or_else(|| Refusal::invalid(format!("{what} is missing")))?;
    date_time::parse(text)
        .ok_or_else(|| Refusal::invalid(format!("{what} `{text}` is not yyyy-MM-ddTHH:mm:ss")))
}

fn timetable_from_wire(wire: &WireTimetable) -> Result<Timetable, Refusal> {
    let id = required_id(wire.id.as_deref(), "TimezoneTableID")?;
    let mut intervals = Vec::new();
    for tz in wire.list.iter().flat_map(|l| &l.timezones) {
        let time = |text: Option<&str>, what: &str| {
            let text = text.ok_or_else(|| Refusal::invalid(format!("{what} is missing")))?;
            day_time::parse(text)
                .ok_or_else(|| Refusal::invalid(format!("{what} `{text}` is not HH:mm:ss")))
        };
        intervals.push(Interval {
            start: time(tz.start.as_deref(), "StartTime")?,
            end: time(tz.end.as_deref(), "EndTime")?,
            days: [
                flag(tz.monday.as_deref(), "Monday")?,
                flag(tz.tuesday.as_deref(), "Tuesday")?,
                flag(tz.wednesday.as_deref(), "Wednesday")?,
                flag(tz.thursday.as_deref(), "Thursday")?,
                flag(tz.friday.as_deref(), "Friday")?,
                flag(tz.saturday.as_deref(), "Saturday")?,
                flag(tz.sunday.as_deref(), "Sunday")?,
            ],
        });
    }
    Ok(Timetable {
        id,
        name: wire.name.clone().unwrap_or_default(),
        intervals,
    })
}

fn group_zone_from_wire(wire: &WireGroupZone) -> Result<GroupZone, Refusal> {
    let zone = wire
        .zone
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Refusal::invalid("a Group_Zone has no ExtZoneID"))?
        .to_owned();
    let timetable = match wire.timetable.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(required_id(Some(text), "TimezoneTableID")?),
    };
    let period = match &wire.period {
        Some(p) => Some(Period {
            start: date(p.start.as_deref(), "Period.StartDate")?,
            end: date(p.end.as_deref(), "Period.EndDate")?,
        }),
        None => None,
    };
    Ok(GroupZone {
        zone,
        timetable,
        use_period: flag(wire.use_period.as_deref(), "UsePeriod")?,
        period,
    })
}

fn timetable_xml(timetable: &Timetable) -> String {
    let zones: String = timetable
        .intervals
        .iter()
        .map(|i| {
            let days = [
                "Monday",
                "Tuesday",
                "Wednesday",
                "Thursday",
                "Friday",
                "Saturday",
                "Sunday",
            ]
            .iter()
            .zip(i.days)
            .map(|(day, on)| format!("<{day}>{}</{day}>", u8::from(on)))
            .collect::<String>();
            format!(
                "<Timezone><StartTime>{}</StartTime><EndTime>{}</EndTime>{days}</Timezone>",
                day_time::format(i.start),
                day_time::format(i.end)
            )
        })
        .collect();
    format!(
        "<SaltoDBTimezoneTable><TimezoneTableID>{}</TimezoneTableID><Name>{}</Name><TimezoneList>{zones}</TimezoneList></SaltoDBTimezoneTable>",
        timetable.id,
        escape(timetable.name.as_str())
    )
}

fn group_xml(group: &crate::model::Group) -> String {
    let entries: String = group
        .zones
        .iter()
        .map(|z| {
            let timetable = z
                .timetable
                .map(|id| format!("<TimezoneTableID>{id}</TimezoneTableID>"))
                .unwrap_or_default();
            let period = z
                .period
                .map(|p| {
                    format!(
                        "<Period><StartDate>{}</StartDate><EndDate>{}</EndDate></Period>",
                        date_time::format(p.start),
                        date_time::format(p.end)
                    )
                })
                .unwrap_or_default();
            format!(
                "<SaltoDB.AccessPermission.Group_Zone><ExtZoneID>{}</ExtZoneID>{timetable}<UsePeriod>{}</UsePeriod>{period}</SaltoDB.AccessPermission.Group_Zone>",
                escape(z.zone.as_str()),
                u8::from(z.use_period)
            )
        })
        .collect();
    format!(
        "<SaltoDBGroup><ExtGroupID>{}</ExtGroupID><Name>{}</Name><GroupZoneList>{entries}</GroupZoneList></SaltoDBGroup>",
        escape(group.ext_id.as_str()),
        escape(group.name.as_str())
    )
}

//! The typed SHIP client (docs/contracts/salto-ship.md): XML request/response calls over HTTP
//! `POST`, with the endpoint's authentication and a timeout on every call. Callers see groups,
//! zone permissions and timetables as plain Rust values; the XML stays in `wire`, and every
//! failure arrives as a [`ShipError`] that already knows its [`Remedy`]. salto-sync drives
//! permissions with it; booking-api's connection check makes one harmless call with it
//! ([`ShipClient::check`]).

mod error;
mod wire;

pub use error::{Remedy, ShipError, remedy_for_code, remedy_for_http_status};

use std::sync::Arc;
use std::time::Duration;

use chrono::format::{Item, Numeric, Pad, Parsed};
use chrono::{NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use serde::Serialize;
use serde::de::DeserializeOwned;

use contracts::ConnectionProblem;
use platform::bulkhead::CallObserver;

pub const ZONE_LIST_READ: &str = "SaltoDBZoneList.Read";
pub const TIMETABLE_INSERT: &str = "SaltoDBTimezoneTable.Insert";
pub const TIMETABLE_READ: &str = "SaltoDBTimezoneTable.Read";
pub const TIMETABLE_DELETE: &str = "SaltoDBTimezoneTable.Delete";
pub const GROUP_READ: &str = "SaltoDBGroup.Read";
pub const GROUP_UPDATE: &str = "SaltoDBGroup.Update";

const CONTENT_TYPE: &str = "application/vnd.saltosystems.ship.v1+xml";

/// Seconds from local midnight; [`END_OF_DAY`] (`24:00:00`) closes a day.
pub type DaySeconds = u32;
pub const END_OF_DAY: DaySeconds = 24 * 3600;

/// A `Period`: local wall-clock times on the Salto server (= the building's time zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period {
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
}

impl Period {
    /// The whole of one local date, as the contract's example writes it.
    pub fn whole_day(date: NaiveDate) -> Period {
        Period {
            start: date.and_time(NaiveTime::MIN),
            end: date.and_time(NaiveTime::from_hms_opt(23, 59, 59).unwrap_or(NaiveTime::MIN)),
        }
    }
}

/// One `Group_Zone`: a group's permission on a zone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ZonePermission {
    pub zone: String,
    pub timetable: Option<u32>,
    /// `Some` = `UsePeriod` 1 with this period.
    pub period: Option<Period>,
}

/// A `SaltoDBGroup` (an apartment's User Access Level) with its permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub ext_id: String,
    pub name: Option<String>,
    pub permissions: Vec<ZonePermission>,
}

/// One timetable interval, `[start, end)` on the flagged weekdays (Monday first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interval {
    pub start: DaySeconds,
    pub end: DaySeconds,
    pub days: [bool; 7],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timetable {
    pub id: u32,
    pub name: String,
    pub intervals: Vec<Interval>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    pub ext_id: String,
    pub name: String,
}

/// How connecX proves itself to a SHIP endpoint.
#[derive(Clone, PartialEq, Eq)]
pub enum ShipAuth {
    None,
    /// HTTP Basic.
    Basic {
        username: String,
        password: String,
    },
    /// Header `Salto-SHIP-Key`.
    Key(String),
}

impl std::fmt::Debug for ShipAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShipAuth::None => f.write_str("None"),
            ShipAuth::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            ShipAuth::Key(_) => f.write_str("Key(<redacted>)"),
        }
    }
}

/// A SHIP endpoint: where, how to authenticate, how long one call may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipSettings {
    pub url: String,
    pub auth: ShipAuth,
    pub timeout: Duration,
}

/// A SHIP client; cheap to clone (one connection pool).
#[derive(Clone)]
pub struct ShipClient {
    http: reqwest::Client,
    url: String,
    /// `url`, parsed once rather than at every call (`None` if it does not parse: each call then
    /// fails as reqwest reports it).
    parsed_url: Option<reqwest::Url>,
    auth: ShipAuth,
    timeout: Duration,
    /// Told of every call (the server's bulkhead).
    observer: Option<Arc<dyn CallObserver>>,
}

impl std::fmt::Debug for ShipClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShipClient")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The client could not be made (a TLS backend problem; settings are validated before).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the SHIP HTTP client: {0}")]
pub struct ClientBuildError(#[source] reqwest::Error);

impl ShipClient {
    pub fn new(settings: &ShipSettings) -> Result<Self, ClientBuildError> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.timeout)
            .build()
            .map_err(ClientBuildError)?;
        let url = settings.url.trim().to_owned();
        Ok(Self {
            http,
            parsed_url: reqwest::Url::parse(&url).ok(),
            url,
            auth: settings.auth.clone(),
            timeout: settings.timeout,
            observer: None,
        })
    }

    /// Tells `observer` whether each call found the server working ([`ShipError::shows_server_works`]).
    pub fn observed_by(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The endpoint's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One harmless call that proves the endpoint answers SHIP and takes the credentials: the
    /// first zone of the zone list. `Err` says what is wrong, in the connection check's words.
    pub async fn check(&self) -> Result<(), (ConnectionProblem, String)> {
        let answer: Result<wire::ZoneListAnswer, ShipError> = self
            .call(
                ZONE_LIST_READ,
                wire::ZoneListRead {
                    max_count: 1,
                    starting_from: None,
                },
            )
            .await;
        answer.map(|_| ()).map_err(|error| {
            let problem = match &error {
                ShipError::Timeout { .. } => ConnectionProblem::Timeout,
                ShipError::Unreachable { .. } => ConnectionProblem::Unreachable,
                ShipError::Http {
                    status: 401 | 403, ..
                } => ConnectionProblem::CredentialsRefused,
                ShipError::Http { status, .. } if *status >= 500 => ConnectionProblem::Unreachable,
                ShipError::Http { .. } | ShipError::Protocol { .. } => {
                    ConnectionProblem::ProtocolError
                }
                // It speaks SHIP: a busy or licence-limited server is still there.
                ShipError::Refused { code, .. } if remedy_for_code(*code) == Remedy::Transient => {
                    ConnectionProblem::Unreachable
                }
                ShipError::Refused { .. } => ConnectionProblem::ProtocolError,
            };
            (problem, error.to_string())
        })
    }

    /// `SaltoDBGroup.Read`.
    pub async fn read_group(&self, ext_group_id: &str) -> Result<Group, ShipError> {
        let answer: wire::GroupAnswer = self
            .call(GROUP_READ, wire::GroupId { ext_group_id })
            .await?;
        let group = answer
            .group
            .ok_or_else(|| protocol(GROUP_READ, "no SaltoDBGroup"))?;
        let permissions = group
            .zones
            .entries
            .into_iter()
            .map(permission_from_wire)
            .collect::<Result<Vec<_>, String>>()
            .map_err(|detail| protocol(GROUP_READ, detail))?;
        Ok(Group {
            ext_id: group
                .ext_group_id
                .unwrap_or_else(|| ext_group_id.to_owned()),
            name: group.name,
            permissions,
        })
    }

    /// `SaltoDBGroup.Update`: `group.permissions` replaces the group's whole list.
    pub async fn update_group(&self, group: &Group) -> Result<(), ShipError> {
        let params = wire::GroupUpdate {
            group: wire::Group {
                ext_group_id: Some(group.ext_id.clone()),
                name: group.name.clone(),
                zones: wire::GroupZoneList {
                    entries: group.permissions.iter().map(permission_to_wire).collect(),
                },
            },
        };
        let _: wire::NoParams = self.call(GROUP_UPDATE, params).await?;
        Ok(())
    }

    /// `SaltoDBTimezoneTable.Insert` (an existing ID is refused with code 10).
    pub async fn insert_timetable(&self, timetable: &Timetable) -> Result<(), ShipError> {
        let params = wire::TimetableInsert {
            table: timetable_to_wire(timetable),
        };
        let _: wire::NoParams = self.call(TIMETABLE_INSERT, params).await?;
        Ok(())
    }

    /// `SaltoDBTimezoneTable.Read`.
    pub async fn read_timetable(&self, id: u32) -> Result<Timetable, ShipError> {
        let answer: wire::TimetableAnswer =
            self.call(TIMETABLE_READ, wire::TimetableId { id }).await?;
        let table = answer
            .table
            .ok_or_else(|| protocol(TIMETABLE_READ, "no SaltoDBTimezoneTable"))?;
        timetable_from_wire(table, id).map_err(|detail| protocol(TIMETABLE_READ, detail))
    }

    /// `SaltoDBTimezoneTable.Delete`.
    pub async fn delete_timetable(&self, id: u32) -> Result<(), ShipError> {
        let _: wire::NoParams = self
            .call(TIMETABLE_DELETE, wire::TimetableId { id })
            .await?;
        Ok(())
    }

    /// `SaltoDBZoneList.Read`, every page.
    pub async fn read_zones(&self) -> Result<Vec<Zone>, ShipError> {
        let mut zones: Vec<Zone> = Vec::new();
        loop {
            let starting_from = zones.last().map(|z| z.ext_id.clone());
            let page: wire::ZoneListAnswer = self
                .call(
                    ZONE_LIST_READ,
                    wire::ZoneListRead {
                        max_count: 100,
                        starting_from: starting_from.as_deref(),
                    },
                )
                .await?;
            let before = zones.len();
            for zone in page.list.zones {
                let ext_id = zone.ext_zone_id.unwrap_or_default();
                // A server that repeats the starting zone must not make us loop or list it twice.
                if Some(&ext_id) != starting_from.as_ref() {
                    zones.push(Zone {
                        ext_id,
                        name: zone.name.unwrap_or_default(),
                    });
                }
            }
            let eof = page.eof.as_deref().map(str::trim) != Some("0");
            if eof || zones.len() == before {
                return Ok(zones);
            }
        }
    }

    /// One SHIP call, measured (`platform::metrics::record_external_call`).
    async fn call<P: Serialize, R: DeserializeOwned + Default>(
        &self,
        request: &'static str,
        params: P,
    ) -> Result<R, ShipError> {
        let started = std::time::Instant::now();
        let result = self.call_unmeasured(request, params).await;
        platform::metrics::record_external_call("salto", request, started, result.is_ok());
        if let Some(observer) = &self.observer {
            match &result {
                Err(error) if !error.shows_server_works() => observer.failed(&error.to_string()),
                _ => observer.answered(),
            }
        }
        result
    }

    /// One SHIP call: send, bound by the timeout, read the answer or its `Exception`.
    async fn call_unmeasured<P: Serialize, R: DeserializeOwned + Default>(
        &self,
        request: &'static str,
        params: P,
    ) -> Result<R, ShipError> {
        let body = request_xml(request, params)?;
        let post = match &self.parsed_url {
            Some(url) => self.http.post(url.clone()),
            None => self.http.post(&self.url),
        };
        let mut builder = post
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body);
        builder = match &self.auth {
            ShipAuth::None => builder,
            ShipAuth::Basic { username, password } => builder.basic_auth(username, Some(password)),
            ShipAuth::Key(key) => builder.header("Salto-SHIP-Key", key),
        };
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                ShipError::Timeout {
                    request,
                    timeout: self.timeout,
                }
            } else {
                ShipError::Unreachable {
                    request,
                    detail: e.to_string(),
                }
            }
        };
        let response = builder.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(ShipError::Http { request, status });
        }
        let text = read_limited(response).await.map_err(|e| match e {
            Limited::Transport(e) => transport(e),
            Limited::TooBig => protocol(
                request,
                format!("the answer is larger than {MAX_ANSWER_BYTES} bytes"),
            ),
        })?;
        parse_response(request, &String::from_utf8_lossy(&text))
    }
}

/// The most an answer may hold. SHIP answers are a few kilobytes (one group's zone list at
/// most); anything bigger is not an answer this client reads, and reading it whole would let one
/// server fill a worker's memory.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

enum Limited {
    Transport(reqwest::Error),
    TooBig,
}

/// A body, read up to [`MAX_ANSWER_BYTES`] (more is refused, read no further).
async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, Limited> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(Limited::TooBig);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Limited::Transport)? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(Limited::TooBig);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn protocol(request: &'static str, detail: impl Into<String>) -> ShipError {
    ShipError::Protocol {
        request,
        detail: detail.into(),
    }
}

fn request_xml<P: Serialize>(request: &'static str, params: P) -> Result<String, ShipError> {
    let call = wire::RequestCall {
        request_name: request,
        params,
    };
    let xml = quick_xml::se::to_string(&call)
        .map_err(|e| protocol(request, format!("cannot write the request: {e}")))?;
    Ok(format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{xml}"))
}

/// Reads a `RequestResponse`: its `Exception` as [`ShipError::Refused`], else its `Params`.
fn parse_response<R: DeserializeOwned + Default>(
    request: &'static str,
    text: &str,
) -> Result<R, ShipError> {
    let answer: wire::RequestResponse<R> = quick_xml::de::from_str(text)
        .map_err(|e| protocol(request, format!("unreadable answer ({e})")))?;
    if let Some(exception) = answer.exception {
        let code = exception
            .code
            .as_deref()
            .map(str::trim)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| protocol(request, "an Exception without a numeric Code"))?;
        return Err(ShipError::Refused {
            request,
            code,
            message: exception.message.unwrap_or_default(),
        });
    }
    if let Some(name) = answer.request_name.as_deref()
        && name.trim() != request
    {
        return Err(protocol(
            request,
            format!("the answer is for {name}, not {request}"),
        ));
    }
    Ok(answer.params.unwrap_or_default())
}

/// `%Y-%m-%dT%H:%M:%S` as chrono's items: written and read without parsing the format string
/// again for every date of every answer (a group's list holds two per entry).
const DATE_TIME: &[Item<'static>] = &[
    Item::Numeric(Numeric::Year, Pad::Zero),
    Item::Literal("-"),
    Item::Numeric(Numeric::Month, Pad::Zero),
    Item::Literal("-"),
    Item::Numeric(Numeric::Day, Pad::Zero),
    Item::Literal("T"),
    Item::Numeric(Numeric::Hour, Pad::Zero),
    Item::Literal(":"),
    Item::Numeric(Numeric::Minute, Pad::Zero),
    Item::Literal(":"),
    Item::Numeric(Numeric::Second, Pad::Zero),
];

/// SHIP date-times: `yyyy-MM-ddTHH:mm:ss`, local, no zone; `T24:00:00` = the next day's 00:00:00.
pub fn parse_date_time(text: &str) -> Option<NaiveDateTime> {
    let text = text.trim();
    if let Some(date) = text.strip_suffix("T24:00:00") {
        return NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .ok()?
            .succ_opt()
            .map(|d| d.and_time(NaiveTime::MIN));
    }
    let mut parsed = Parsed::new();
    chrono::format::parse(&mut parsed, text, DATE_TIME.iter()).ok()?;
    parsed.to_naive_datetime_with_offset(0).ok()
}

pub fn format_date_time(at: NaiveDateTime) -> String {
    at.format_with_items(DATE_TIME.iter()).to_string()
}

/// SHIP times of day, `HH:mm:ss`; `24:00:00` ends the day.
pub fn parse_day_time(text: &str) -> Option<DaySeconds> {
    let text = text.trim();
    if text == "24:00:00" {
        return Some(END_OF_DAY);
    }
    NaiveTime::parse_from_str(text, "%H:%M:%S")
        .ok()
        .map(|t| t.num_seconds_from_midnight())
}

pub fn format_day_time(seconds: DaySeconds) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

fn flag(on: bool) -> Option<String> {
    Some(if on { "1" } else { "0" }.to_owned())
}

fn read_flag(text: Option<&str>) -> bool {
    text.map(str::trim) == Some("1")
}

fn permission_to_wire(permission: &ZonePermission) -> wire::GroupZone {
    wire::GroupZone {
        ext_zone_id: Some(permission.zone.clone()),
        timezone_table_id: permission.timetable.map(|id| id.to_string()),
        use_period: flag(permission.period.is_some()),
        period: permission.period.map(|p| wire::Period {
            start_date: Some(format_date_time(p.start)),
            end_date: Some(format_date_time(p.end)),
        }),
    }
}

fn permission_from_wire(entry: wire::GroupZone) -> Result<ZonePermission, String> {
    let zone = entry
        .ext_zone_id
        .map(|z| z.trim().to_owned())
        .filter(|z| !z.is_empty())
        .ok_or("a Group_Zone without ExtZoneID")?;
    let timetable = match entry.timezone_table_id.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(
            text.parse()
                .map_err(|_| format!("TimezoneTableID `{text}` of zone {zone}"))?,
        ),
    };
    let period = if read_flag(entry.use_period.as_deref()) {
        let p = entry
            .period
            .ok_or_else(|| format!("zone {zone} uses a period but has none"))?;
        let read = |text: Option<String>, what: &str| {
            text.as_deref()
                .and_then(parse_date_time)
                .ok_or_else(|| format!("{what} of zone {zone} is not yyyy-MM-ddTHH:mm:ss"))
        };
        Some(Period {
            start: read(p.start_date, "StartDate")?,
            end: read(p.end_date, "EndDate")?,
        })
    } else {
        None
    };
    Ok(ZonePermission {
        zone,
        timetable,
        period,
    })
}

fn timetable_to_wire(timetable: &Timetable) -> wire::Timetable {
    wire::Timetable {
        id: Some(timetable.id.to_string()),
        name: Some(timetable.name.clone()),
        list: wire::TimezoneList {
            timezones: timetable
                .intervals
                .iter()
                .map(|i| wire::Timezone {
                    start: Some(format_day_time(i.start)),
                    end: Some(format_day_time(i.end)),
                    monday: flag(i.days[0]),
                    tuesday: flag(i.days[1]),
                    wednesday: flag(i.days[2]),
                    thursday: flag(i.days[3]),
                    friday: flag(i.days[4]),
                    saturday: flag(i.days[5]),
                    sunday: flag(i.days[6]),
                })
                .collect(),
        },
    }
}

fn timetable_from_wire(table: wire::Timetable, id: u32) -> Result<Timetable, String> {
    let intervals = table
        .list
        .timezones
        .into_iter()
        .map(|tz| {
            let time = |text: Option<String>, what: &str| {
                text.as_deref()
                    .and_then(parse_day_time)
                    .ok_or_else(|| format!("{what} of timetable {id} is not HH:mm:ss"))
            };
            Ok(Interval {
                start: time(tz.start, "StartTime")?,
                end: time(tz.end, "EndTime")?,
                days: [
                    read_flag(tz.monday.as_deref()),
                    read_flag(tz.tuesday.as_deref()),
                    read_flag(tz.wednesday.as_deref()),
                    read_flag(tz.thursday.as_deref()),
                    read_flag(tz.friday.as_deref()),
                    read_flag(tz.saturday.as_deref()),
                    read_flag(tz.sunday.as_deref()),
                ],
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Timetable {
        id,
        name: table.name.unwrap_or_default(),
        intervals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        parse_date_time(text).unwrap()
    }

    #[test]
    fn an_update_is_written_as_the_contract_shows() {
        let group = wire::GroupUpdate {
            group: wire::Group {
                ext_group_id: Some("501-56".into()),
                name: None,
                zones: wire::GroupZoneList {
                    entries: vec![permission_to_wire(&ZonePermission {
                        zone: "GAMES-ROOM".into(),
                        timetable: Some(42),
                        period: Some(Period::whole_day(
                            NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
                        )),
                    })],
                },
            },
        };
        let xml = request_xml(GROUP_UPDATE, group).unwrap();
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
        assert!(xml.contains(
            "<RequestCall><RequestName>SaltoDBGroup.Update</RequestName><Params><SaltoDBGroup><ExtGroupID>501-56</ExtGroupID><GroupZoneList><SaltoDB.AccessPermission.Group_Zone><ExtZoneID>GAMES-ROOM</ExtZoneID><TimezoneTableID>42</TimezoneTableID><UsePeriod>1</UsePeriod><Period><StartDate>2026-12-01T00:00:00</StartDate><EndDate>2026-12-01T23:59:59</EndDate></Period></SaltoDB.AccessPermission.Group_Zone></GroupZoneList></SaltoDBGroup></Params></RequestCall>"
        ), "{xml}");
    }

    #[test]
    fn a_group_answer_is_read_ignoring_unknown_elements_and_24_00_is_next_midnight() {
        let text = r#"<?xml version="1.0" encoding="UTF-8"?>
<RequestResponse><RequestName>SaltoDBGroup.Read</RequestName><Params><SaltoDBGroup>
  <ExtGroupID>501-56</ExtGroupID><Name>Apartment 501/56</Name><Colour>blue</Colour>
  <GroupZoneList>
    <SaltoDB.AccessPermission.Group_Zone>
      <ExtZoneID>GAMES-ROOM</ExtZoneID><TimezoneTableID>42</TimezoneTableID><UsePeriod>1</UsePeriod>
      <Period><StartDate>2026-12-01T00:00:00</StartDate><EndDate>2026-12-01T24:00:00</EndDate></Period>
    </SaltoDB.AccessPermission.Group_Zone>
    <SaltoDB.AccessPermission.Group_Zone><ExtZoneID>GYM</ExtZoneID><UsePeriod>0</UsePeriod></SaltoDB.AccessPermission.Group_Zone>
  </GroupZoneList></SaltoDBGroup></Params></RequestResponse>"#;
        let answer: wire::GroupAnswer = parse_response(GROUP_READ, text).unwrap();
        let group = answer.group.unwrap();
        assert_eq!(group.name.as_deref(), Some("Apartment 501/56"));
        let permissions: Vec<_> = group
            .zones
            .entries
            .into_iter()
            .map(|e| permission_from_wire(e).unwrap())
            .collect();
        assert_eq!(
            permissions,
            vec![
                ZonePermission {
                    zone: "GAMES-ROOM".into(),
                    timetable: Some(42),
                    period: Some(Period {
                        start: at("2026-12-01T00:00:00"),
                        end: at("2026-12-02T00:00:00"),
                    }),
                },
                ZonePermission {
                    zone: "GYM".into(),
                    timetable: None,
                    period: None,
                },
            ]
        );
    }

    #[test]
    fn an_exception_becomes_a_refusal_with_its_code() {
        let text = "<RequestResponse><RequestName>SaltoDBGroup.Update</RequestName><Exception><Code>11</Code><Message>zone GYM does not exist</Message></Exception></RequestResponse>";
        let error = parse_response::<wire::NoParams>(GROUP_UPDATE, text).unwrap_err();
        assert_eq!(
            error,
            ShipError::Refused {
                request: GROUP_UPDATE,
                code: 11,
                message: "zone GYM does not exist".into()
            }
        );
        assert_eq!(error.remedy(), Remedy::NeedsManager);
        let garbage = parse_response::<wire::NoParams>(GROUP_UPDATE, "<html>oops").unwrap_err();
        assert_eq!(garbage.remedy(), Remedy::Permanent);
    }

    #[test]
    fn an_empty_list_is_written_as_an_empty_list() {
        let xml = request_xml(
            GROUP_UPDATE,
            wire::GroupUpdate {
                group: wire::Group {
                    ext_group_id: Some("501-56".into()),
                    name: Some("A & B".into()),
                    zones: wire::GroupZoneList::default(),
                },
            },
        )
        .unwrap();
        assert!(xml.contains("<Name>A &amp; B</Name>"), "{xml}");
        assert!(
            xml.contains("<GroupZoneList/>") || xml.contains("<GroupZoneList></GroupZoneList>"),
            "{xml}"
        );
    }

    #[test]
    fn times_of_day_write_and_read_24_00() {
        assert_eq!(format_day_time(END_OF_DAY), "24:00:00");
        assert_eq!(parse_day_time("24:00:00"), Some(END_OF_DAY));
        assert_eq!(parse_day_time("18:30:00"), Some(18 * 3600 + 1800));
    }

    mod date_times {
        use proptest::prelude::*;

        use super::*;

        const STRFTIME: &str = "%Y-%m-%dT%H:%M:%S";

        proptest! {
            /// The items read and write exactly what the format string did.
            #[test]
            fn read_as_the_format_string_reads(text in "[ 0-9T:-]{0,24}") {
                // The end of a day is read apart (`a_group_answer_is_read_…`).
                prop_assume!(!text.trim().ends_with("T24:00:00"));
                let expected = NaiveDateTime::parse_from_str(text.trim(), STRFTIME).ok();
                prop_assert_eq!(parse_date_time(&text), expected);
            }

            #[test]
            fn written_as_the_format_string_writes(seconds in 0i64..4_102_444_800) {
                let at = chrono::DateTime::from_timestamp(seconds, 0).unwrap().naive_utc();
                prop_assert_eq!(format_date_time(at), at.format(STRFTIME).to_string());
                prop_assert_eq!(parse_date_time(&format_date_time(at)), Some(at));
            }
        }
    }

    mod malformed_answers {
        use proptest::prelude::*;

        use super::*;

        const GOOD: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<RequestResponse><RequestName>SaltoDBGroup.Read</RequestName><Params><SaltoDBGroup><ExtGroupID>501-56</ExtGroupID><GroupZoneList><SaltoDB.AccessPermission.Group_Zone><ExtZoneID>GAMES-ROOM</ExtZoneID><TimezoneTableID>42</TimezoneTableID><UsePeriod>1</UsePeriod><Period><StartDate>2026-12-01T00:00:00</StartDate><EndDate>2026-12-01T23:59:59</EndDate></Period></SaltoDB.AccessPermission.Group_Zone></GroupZoneList></SaltoDBGroup></Params></RequestResponse>";

        /// What reading a group answer does with `text`, all the way to permissions.
        fn read(text: &str) -> Result<(), ShipError> {
            let answer: wire::GroupAnswer = parse_response(GROUP_READ, text)?;
            if let Some(group) = answer.group {
                for entry in group.zones.entries {
                    permission_from_wire(entry).map_err(|d| protocol(GROUP_READ, d))?;
                }
            }
            Ok(())
        }

        proptest! {
            #[test]
            fn a_cut_off_answer_is_an_error_or_an_answer_never_a_panic(at in 0..GOOD.len()) {
                let _ = read(&GOOD[..at]);
            }

            #[test]
            fn a_changed_byte_is_an_error_or_an_answer_never_a_panic(
                at in 0..GOOD.len(),
                byte in any::<u8>(),
            ) {
                let mut bytes = GOOD.as_bytes().to_vec();
                bytes[at] = byte;
                let _ = read(&String::from_utf8_lossy(&bytes));
            }

            #[test]
            fn any_text_is_an_error_or_an_answer_never_a_panic(text in ".{0,400}") {
                let _ = read(&text);
            }

            #[test]
            fn any_value_in_a_field_is_an_error_or_an_answer_never_a_panic(
                field in prop::sample::select(vec!["42", "1", "2026-12-01T00:00:00", "2026-12-01T23:59:59", "GAMES-ROOM"]),
                value in "[ -~]{0,30}",
            ) {
                let _ = read(&GOOD.replacen(field, &value, 1));
            }
        }
    }
}

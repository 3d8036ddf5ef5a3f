"""One-shot seeder of the compose stack's demo building (the same demo as scripts/run-local).

Runs in the stock python image (standard library only) once booking-api and the simulators are
healthy. It seeds salto-sim (which has no seed flag; ipassan-sim loads deploy/compose/ipassan-seed.json
itself), upserts building `demo` through booking-api's own admin API with a manager token it mints
from the stack's JWT secret, and prints tokens and a ready `curl`. Every call is an upsert, so a
second run changes nothing.

Environment: API_URL, SALTO_SIM_URL, JWT_SECRET, PUBLIC_API_URL and PUBLIC_IPASSAN_SIM_URL
(the host-side addresses printed in the instructions).
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

API = os.environ.get("API_URL", "http://booking-api:8080")
SALTO_SIM = os.environ.get("SALTO_SIM_URL", "http://salto-sim:8091")
PUBLIC_API = os.environ.get("PUBLIC_API_URL", "http://localhost:8080")
PUBLIC_IPASSAN_SIM = os.environ.get("PUBLIC_IPASSAN_SIM_URL", "http://localhost:8090")
SECRET = os.environ["JWT_SECRET"]
TOKEN_LIFETIME = timedelta(days=30)

TIMEZONE = "Australia/Sydney"
BUILDING = "demo"
MANAGER_EMAIL = "manager@demo.connecx.example"
IPASSAN_SITE = "demo-site"
APARTMENT = "apt-101"
ACCESS_LEVEL = "AL-APT-101"  # Salto access level ExtID of the apartment
FACILITY = "games-room"
ZONE = "GAMES-ROOM"  # Salto Zone ID of the facility
ALICE = "res-alice"  # synced to iPassan (person p-1001 in ipassan-seed.json)
BOB = "res-bob"  # not synced: visitor bookings with access answer 422
IPASSAN_PERSON = "p-1001"
IPASSAN_DOOR = "main-entrance"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def mint(sub: str, role: str, apartment_id: str | None = None) -> str:
    """An HS256 token with the claims booking-api reads (docs/architecture.md, "Services and what each owns")."""
    claims = {
        "sub": sub,
        "role": role,
        "building_id": BUILDING,
        "exp": int(time.time() + TOKEN_LIFETIME.total_seconds()),
    }
    if apartment_id is not None:
        claims["apartment_id"] = apartment_id
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = hmac.new(SECRET.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


def call(method: str, url: str, body: dict, token: str | None = None) -> None:
    request = urllib.request.Request(
        url, method=method, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for attempt in range(1, 31):
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
                return
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            sys.exit(f"seed: {method} {url} answered {error.code}: {detail}")
        except OSError as error:  # not up yet: wait a little, 30 times at most
            if attempt == 30:
                sys.exit(f"seed: {method} {url} failed: {error}")
            time.sleep(2)


def main() -> None:
    call(
        "POST",
        f"{SALTO_SIM}/_sim/seed",
        {
            "timezone": TIMEZONE,
            "groups": [{"ext_id": ACCESS_LEVEL, "name": "Apartment 101"}],
            "zones": [{"ext_id": ZONE, "name": "Games room"}],
        },
    )
    print("seeded salto-sim with the apartment's access level and the games room's zone")

    manager = mint("manager-demo", "manager")
    alice = mint(ALICE, "resident", APARTMENT)
    bob = mint(BOB, "resident", APARTMENT)
    call(
        "PUT",
        f"{API}/v1/buildings/{BUILDING}",
        {
            "name": "Demo Tower",
            "timezone": TIMEZONE,
            "manager_emails": [MANAGER_EMAIL],
            "ipassan_site": IPASSAN_SITE,
            "double_booking_policy": "auto",
        },
        manager,
    )
    call("PUT", f"{API}/v1/apartments/{APARTMENT}", {"access_control_id": ACCESS_LEVEL}, manager)
    call(
        "PUT",
        f"{API}/v1/facilities/{FACILITY}",
        {"name": "Games room", "access_control_facility_id": ZONE},
        manager,
    )
    call(
        "PUT",
        f"{API}/v1/residents/{ALICE}",
        {
            "name": "Alice Resident",
            "email": "alice@demo.connecx.example",
            "apartment_id": APARTMENT,
            "ipassan_person_id": IPASSAN_PERSON,
        },
        manager,
    )
    call(
        "PUT",
        f"{API}/v1/residents/{BOB}",
        {
            "name": "Bob Resident",
            "email": "bob@demo.connecx.example",
            "apartment_id": APARTMENT,
            "ipassan_person_id": None,
        },
        manager,
    )
    print(f"seeded building `{BUILDING}` through booking-api's admin API")

    try:
        zone = ZoneInfo(TIMEZONE)
    except ZoneInfoNotFoundError:  # an image without tzdata: Sydney's standard time is close enough
        zone = timezone(timedelta(hours=10))
    tomorrow = datetime.now(zone).date() + timedelta(days=1)
    starts = datetime(tomorrow.year, tomorrow.month, tomorrow.day, 18, 0, tzinfo=zone)
    ends = starts + timedelta(hours=3)
    booking = json.dumps(
        {
            "visitor": {"name": "Vera Visitor", "email": "vera@visitor.example"},
            "starts_at": starts.isoformat(),
            "ends_at": ends.isoformat(),
            "provide_access": True,
        }
    )
    inside = (starts + timedelta(minutes=30)).isoformat()
    rule = "=" * 78
    print(
        f"""
{rule}
Demo building `{BUILDING}` ({TIMEZONE}), manager {MANAGER_EMAIL}: apartment {APARTMENT}
(Salto access level {ACCESS_LEVEL}), facility {FACILITY} (Salto zone {ZONE}), resident {ALICE}
(iPassan person {IPASSAN_PERSON}) and resident {BOB} (not synced to iPassan).

Book a visitor for tomorrow evening as {ALICE} (token valid for 30 days):

export CONNECX_TOKEN='{alice}'
curl -sS -w '\\n' -X POST {PUBLIC_API}/v1/visitor-bookings \\
  -H "Authorization: Bearer $CONNECX_TOKEN" \\
  -H 'Content-Type: application/json' -H 'Prefer: wait=5' \\
  -d '{booking}'

Try the PIN at the door (set the simulator's clock inside the visit first):

curl -sS -w '\\n' -X POST {PUBLIC_IPASSAN_SIM}/_sim/clock -H 'Content-Type: application/json' -d '{{"now":"{inside}"}}'
curl -sS -w '\\n' -X POST {PUBLIC_IPASSAN_SIM}/_sim/doors/{IPASSAN_DOOR}/pin -H 'Content-Type: application/json' -d '{{"site":"{IPASSAN_SITE}","pin":"<PIN>"}}'

{BOB}'s token: {bob}
Manager token:   {manager}
{rule}"""
    )


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
# Writes kiosk.json, the OpenAPI document of the kiosk API (served at /api/v1/kiosk/openapi.json
# and fuzzed by tests/tests/kiosk_fuzz.rs). Run it after changing the API: python3 generate.py
import os
import json
S = lambda **kw: dict(kw)
string = {"type": "string"}
def arr(x): return {"type": "array", "items": x}
def ref(n): return {"$ref": f"#/components/schemas/{n}"}
def err(desc): return {"description": desc, "content": {"application/json": {"schema": ref("Error")}}}
def retry(desc):
    e = err(desc)
    e["headers"] = {"Retry-After": {"description": "Seconds to wait before asking again", "schema": {"type": "integer", "minimum": 1}}}
    return e
common = {
    "401": err("No token, or a token the gateway does not know"),
    "403": err("The token is not a terminal's"),
    "429": retry("The terminal is over its rate (`[kiosk]` in gateway.toml)"),
}
def with_common(extra, replica=True):
    r = dict(extra)
    r.update(common)
    if replica:
        r["503"] = retry("No master data yet: the gateway has not received it from central")
    return r
def ok(schema, desc="OK"):
    return {"description": desc, "content": {"application/json": {"schema": schema}}}
q = lambda name, schema, desc, required=False: {"name": name, "in": "query", "required": required, "description": desc, "schema": schema}
p = lambda name, schema, desc: {"name": name, "in": "path", "required": True, "description": desc, "schema": schema}
# The media types content files are served as (gateway/src/api/kiosk.rs, media_type).
files = {t: {"schema": {"type": "string", "format": "binary"}} for t in [
    "text/plain; charset=utf-8", "application/pdf", "text/html; charset=utf-8", "video/mp4",
    "video/webm", "audio/mpeg", "audio/mp4", "audio/ogg", "image/jpeg", "image/png",
    "application/octet-stream"]}
def submission(categories, application):
    """A report or dispute, or an application (which names its service item)."""
    props = {
        "category": {"type": "string", "enum": categories},
        "item_code": {"type": "string", "nullable": not application, "description": "The service item (required for an application); an item of the replica (the document served by a gateway lists them)"},
        "grid": {"type": "string", "nullable": True, "description": "The grid it concerns, a code of the replica (the document served by a gateway lists them); found from location when absent"},
        "location": {"type": "object", "nullable": True, "additionalProperties": False, "required": ["lon", "lat"], "properties": {"lon": {"type": "number", "minimum": -180, "maximum": 180}, "lat": {"type": "number", "minimum": -90, "maximum": 90}}},
        "title": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "\\S"},
        "description": {"type": "string", "maxLength": 2000},
        "contact": {"type": "object", "additionalProperties": False, "required": ["name", "phone"], "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 32, "pattern": "\\S"}, "phone": {"type": "string", "pattern": "^(1[0-9]{10}|0(-?[0-9]){9,11})$", "description": "11-digit mobile or 0… landline"}}},
    }
    required = ["category", "title", "contact"] + (["item_code"] if application else [])
    return {"type": "object", "additionalProperties": False, "required": required, "properties": props}

version = {"type": "integer", "minimum": 0, "description": "The replica's master data version"}
spec = {
  "openapi": "3.0.3",
  "info": {
    "title": "GridEdge kiosk API",
    "version": "1",
    "description": "Served by each centre's gateway to the service hall's kiosks, from its replica of the street's master data, so it answers when the WAN is down. Every call needs a terminal's bearer token (`terminals[].token` in gateway.toml); each terminal is held to `[kiosk]` rates. Errors are JSON `{\"error\": \"what was wrong\"}`.",
  },
  "servers": [{"url": "/"}],
  "security": [{"terminal": []}],
  "paths": {
    "/api/v1/kiosk/items": {"get": {
      "summary": "Service items by keywords or code (ranked); all of a department or life event; or, with none of these, every item",
      "operationId": "searchItems",
      "parameters": [
        q("q", {"type": "string", "maxLength": 64}, "Keywords (Chinese text, e.g. 低保 申请) or an item code or its prefix; at most 64 characters"),
        q("department", {"type": "string"}, "Every item of this department (used when q is absent)"),
        q("life_event", {"type": "string"}, "Every item of this life event, e.g. 生育 (used when q is absent)"),
        q("limit", {"type": "integer", "minimum": 1, "maximum": 50, "default": 10}, "Most hits for q"),
      ],
      "responses": with_common({
        "200": ok({"anyOf": [ref("SearchResult"), ref("ItemList")]}),
        "400": err("q too long; limit out of range"),
      })}},
    "/api/v1/kiosk/items/{code}": {"get": {
      "summary": "One service item", "operationId": "getItem",
      "parameters": [p("code", string, "Item code, e.g. MZ110199-0001")],
      "responses": with_common({"200": ok(ref("ServiceItem")), "404": err("No such item")})}},
    "/api/v1/kiosk/grids": {"get": {
      "summary": "Grids by address (road and house number, estate), name words or code, best first; without q, every grid unit",
      "operationId": "findGrids",
      "parameters": [q("q", {"type": "string", "maxLength": 64}, "e.g. 红星路12号3单元, 纺织新村, 光明")],
      "responses": with_common({"200": ok({"anyOf": [ref("GridsFound"), ref("GridList")]}), "400": err("q too long")})}},
    "/api/v1/kiosk/grids/at": {"get": {
      "summary": "The base grid containing a point, with its staff and party organisations",
      "operationId": "gridAt",
      "parameters": [
        q("lon", {"type": "number", "minimum": -180, "maximum": 180}, "Longitude (WGS 84)", required=True),
        q("lat", {"type": "number", "minimum": -90, "maximum": 90}, "Latitude (WGS 84)", required=True),
      ],
      "responses": with_common({"200": ok(ref("GridAnswer")), "400": err("Not a longitude and latitude"), "404": err("No base grid of this centre contains the point")})}},
    "/api/v1/kiosk/grids/{code}": {"get": {
      "summary": "A grid unit with its staff and party organisations", "operationId": "getGrid",
      "parameters": [p("code", string, "Unified grid code (12, 14 or 17 digits)")],
      "responses": with_common({"200": ok(ref("GridAnswer")), "404": err("No such grid")})}},
    "/api/v1/kiosk/party": {"get": {
      "summary": "The party organisation tree (each organisation names its parent)", "operationId": "partyTree",
      "responses": with_common({"200": ok({"type": "object", "required": ["version", "party"], "properties": {"version": version, "party": arr(ref("PartyOrg"))}})})}},
    "/api/v1/kiosk/content": {"get": {
      "summary": "Learning content, and whether each file is at the gateway yet", "operationId": "listContent",
      "responses": with_common({"200": ok({"type": "object", "required": ["version", "files"], "properties": {"version": version, "files": arr(ref("ContentEntry"))}})})}},
    "/api/v1/kiosk/content/{id}": {"get": {
      "summary": "A content file, whole or one byte range", "operationId": "getContent",
      "parameters": [
        p("id", string, "Content id, e.g. doc-001"),
        {"name": "Range", "in": "header", "required": False, "schema": {"type": "string"}, "description": "One byte range, `bytes=first-last`, `bytes=first-` or `bytes=-suffix`; anything else gets the whole file"},
        {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}, "description": "The ETag (the file's SHA-256 in quotes) the kiosk holds"},
      ],
      "responses": with_common({
        "200": {"description": "The whole file, typed by its name", "headers": {"ETag": {"schema": string}, "Accept-Ranges": {"schema": string}}, "content": files},
        "206": {"description": "The range asked for", "headers": {"Content-Range": {"schema": string}}, "content": files},
        "304": {"description": "Unchanged (If-None-Match)"},
        "404": err("No such content"),
        "416": err("The range starts past the end (Content-Range: bytes */length)"),
      })}},
    "/api/v1/kiosk/submissions": {"post": {
      "summary": "Hand in a report, dispute or application; 201 with a receipt once it is on the gateway's disk",
      "operationId": "submit",
      "requestBody": {"required": True, "content": {"application/json": {"schema": ref("NewSubmission")}}},
      "responses": with_common({
        "201": ok(ref("SubmissionStatus"), "Taken: durable in the outbox, on its way to central"),
        "400": err("A field is missing or invalid (named in the error)"),
        "413": err("Larger than 32 KiB"),
        "415": err("Not JSON"),
        "503": err("The outbox cannot take it; nothing was stored"),
        "507": retry("No room: the gateway's disk, or its disk budget, is full; nothing was stored"),
      }, replica=False)}},
    "/api/v1/kiosk/submissions/{receipt}": {"get": {
      "summary": "Where a submission is, by its receipt", "operationId": "submissionStatus",
      "parameters": [p("receipt", string, "The receipt, whole with its check code, e.g. gw-hongxing-01-000042-K7Q2XM9P")],
      "responses": with_common({"200": ok(ref("SubmissionStatus")), "404": err("No such receipt")}, replica=False)}},
  },
  "components": {
    "securitySchemes": {"terminal": {"type": "http", "scheme": "bearer", "description": "The terminal's token"}},
    "schemas": {
      "Error": {"type": "object", "required": ["error"], "properties": {"error": string}},
      "Step": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string", "enum": ["申请", "受理", "审查", "决定", "送达"]}, "description": string}},
      "Faq": {"type": "object", "required": ["q", "a"], "properties": {"q": string, "a": string}},
      "ServiceItem": {"type": "object", "required": ["code", "name", "department", "channel", "materials", "time_limit_days", "steps"], "properties": {
        "code": string, "name": string, "department": string, "channel": arr(string), "materials": arr(string),
        "time_limit_days": {"type": "integer", "minimum": 0}, "promised_days": {"type": "integer", "nullable": True},
        "steps": arr(ref("Step")), "fees": string, "faq": arr(ref("Faq")), "life_events": arr(string), "keywords": arr(string)}},
      "Hit": {"allOf": [ref("ServiceItem"), {"type": "object", "required": ["score"], "properties": {"score": {"type": "number"}}}]},
      "SearchResult": {"type": "object", "required": ["version", "query", "hits"], "properties": {"version": version, "query": string, "hits": arr(ref("Hit"))}},
      "ItemList": {"type": "object", "required": ["version", "items"], "properties": {"version": version, "items": arr(ref("ServiceItem"))}},
      "Staff": {"type": "object", "required": ["name", "role", "duty_phone"], "properties": {"name": string, "role": string, "duty_phone": string}},
      "GridUnit": {"type": "object", "required": ["code", "name", "level", "staff"], "properties": {
        "code": string, "name": string, "level": {"type": "string", "enum": ["street", "area", "base"]},
        "parent": {"type": "string", "nullable": True}, "households": {"type": "integer", "nullable": True},
        "boundary": {"type": "object", "nullable": True, "required": ["rings"], "properties": {"rings": {"type": "array", "items": {"type": "array", "items": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}}}}, "description": "Outer ring and holes, each [[lon, lat], …] and closed"},
        "staff": arr(ref("Staff")), "addresses": arr(string)}},
      "GridFound": {"allOf": [ref("GridUnit"), {"type": "object", "required": ["score", "matched"], "properties": {"score": {"type": "integer"}, "matched": string}}]},
      "GridsFound": {"type": "object", "required": ["version", "query", "grids"], "properties": {"version": version, "query": string, "grids": arr(ref("GridFound"))}},
      "GridList": {"type": "object", "required": ["version", "grids"], "properties": {"version": version, "grids": arr(ref("GridUnit"))}},
      "PartyOrg": {"type": "object", "required": ["code", "name", "kind", "grids"], "properties": {"code": string, "name": string, "kind": string, "parent": {"type": "string", "nullable": True}, "grids": arr(string)}},
      "GridAnswer": {"type": "object", "required": ["version", "grid", "party"], "properties": {"version": version, "grid": ref("GridUnit"), "party": arr(ref("PartyOrg"))}},
      "ContentEntry": {"type": "object", "required": ["id", "kind", "title", "file_name", "sha256", "bytes", "available"], "properties": {
        "id": string, "kind": {"type": "string", "enum": ["document", "audio", "video"]}, "title": string, "file_name": string,
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "bytes": {"type": "integer", "minimum": 0}, "available": {"type": "boolean"}}},
      "ReportSubmission": submission(["report", "dispute"], False),
      "ApplicationSubmission": submission(["application"], True),
      "NewSubmission": {"oneOf": [ref("ReportSubmission"), ref("ApplicationSubmission")]},
      "SubmissionStatus": {"type": "object", "required": ["receipt", "status", "category", "title", "updated"], "properties": {
        "receipt": string, "status": {"type": "string", "description": "submitted, routed, in_progress, resolved or closed"},
        "station": {"type": "string", "nullable": True}, "note": string,
        "category": {"type": "string", "enum": ["report", "dispute", "application"]}, "title": string,
        "updated": {"type": "string", "format": "date-time"},
        "version": {"type": "integer", "minimum": 0, "description": "central's count of the case's changes; 0 while only the gateway has it"}}},
    },
  },
}
json.dump(spec, open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "kiosk.json"), "w"), ensure_ascii=False, indent=1)
print("ok")

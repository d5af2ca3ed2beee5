#!/usr/bin/env python3
"""Builds input.jsonl and expected.jsonl for this golden case.

The expected records are written here from the rules (docs/billing-rules.md §3, the sample rate card),
independently of the Rust code: every conversation below is reasoned out by hand in the
comments, and the conversation ids are computed with SHA-256 as docs/billing-rules.md §10 / billing/ids.rs
define them. Run `python3 make.py` after changing the scenario, and review the diff.
"""
import hashlib, json, struct
from datetime import datetime, timezone
from decimal import Decimal

A, A1 = "102290129340398", "106540352242922"   # Sao Paulo, markup 12.5 %, free_tier 2
B, B1 = "102290129348317", "106540352243053"   # Kolkata, markup 20 %, free tier 1000
BR, IN, US, JM, KE, UK, US2, UK2 = ("5511987654321", "919876543210", "16505551234", "18765551234",
                                    "254712345678", "447700900123", "14155550100", "447700900456")

def ts(s): return int(datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp())

def env(waba, pnid, value):
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "1555" + pnid[-7:], "phone_number_id": pnid}, **value}
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": waba, "changes": [{"value": value, "field": "messages"}]}]},
                      separators=(",", ":"))

def msg(user, mid, t, ad=False):
    m = {"from": user, "id": mid, "timestamp": str(ts(t)), "text": {"body": "hello"}, "type": "text"}
    if ad:
        m = {"referral": {"source_url": "https://fb.me/3cr4Wqqkv", "source_id": "120226305854810726",
                          "source_type": "ad", "headline": "Chat with us", "media_type": "image"}, **m}
    return m

def st(user, mid, status, t):
    s = {"id": mid, "status": status, "timestamp": str(ts(t)), "recipient_id": user}
    if status in ("sent", "delivered"):
        s["conversation"] = {"id": "c0ffee" + mid[-6:], "origin": {"type": "business_initiated"}}
        s["pricing"] = {"billable": True, "pricing_model": "CBP", "category": "business_initiated"}
    return s

def inbound(waba, pnid, user, mid, t, ad=False):
    return env(waba, pnid, {"contacts": [{"profile": {"name": "U"}, "wa_id": user}], "messages": [msg(user, mid, t, ad)]})

def statuses(waba, pnid, *items):
    return env(waba, pnid, {"statuses": [st(*i) for i in items]})

lines = [
    # BR writes to A at 20:00; A answers: sent 20:05:00, delivered 20:05:02, read 20:06.
    inbound(A, A1, BR, "wamid.in.br.1", "2022-03-31T20:00:00Z"),
    statuses(A, A1, (BR, "wamid.out.br.1", "sent", "2022-03-31T20:05:00Z")),
    # A template to US (never wrote): BIC. Batched with BR's delivery.
    statuses(A, A1, (BR, "wamid.out.br.1", "delivered", "2022-03-31T20:05:02Z"),
                    (US, "wamid.out.us.1", "sent", "2022-03-31T20:10:00Z")),
    # BR's read (20:06) comes after US's delivery (20:10:03): 243 s behind, so late; but
    # BR's message was already delivered, so it changes nothing.
    statuses(A, A1, (US, "wamid.out.us.1", "delivered", "2022-03-31T20:10:03Z"),
                    (BR, "wamid.out.br.1", "read", "2022-03-31T20:06:00Z")),
    # A template to JM: BIC, third of A's March -> beyond free_tier 2 -> charged.
    statuses(A, A1, (JM, "wamid.out.jm.1", "sent", "2022-03-31T20:15:00Z")),
    statuses(A, A1, (JM, "wamid.out.jm.1", "delivered", "2022-03-31T20:15:05Z")),
    # A second message to BR inside the open conversation: joins, no record.
    statuses(A, A1, (BR, "wamid.out.br.2", "sent", "2022-03-31T20:30:00Z"),
                    (BR, "wamid.out.br.2", "delivered", "2022-03-31T20:30:01Z")),
    # Not JSON (truncated): one dead letter, nothing else lost.
    '{"object":"whatsapp_business_account","entry":[{"id":"1022',
    # KE clicks an ad at 21:00; A answers 21:10:01 -> free entry point (24 h before 2023-03-01).
    inbound(A, A1, KE, "wamid.in.ke.1", "2022-03-31T21:00:00Z", ad=True),
    # IN writes to B at 21:00 (02:30 on April 1st in Kolkata); B answers at 21:01.
    inbound(B, B1, IN, "wamid.in.in.1", "2022-03-31T21:00:00Z"),
    statuses(B, B1, (IN, "wamid.out.in.1", "delivered", "2022-03-31T21:01:00Z")),
    statuses(A, A1, (KE, "wamid.out.ke.1", "sent", "2022-03-31T21:10:00Z"),
                    (KE, "wamid.out.ke.1", "delivered", "2022-03-31T21:10:01Z")),
    # Meta retries the JM delivery: a duplicate, changes nothing.
    statuses(A, A1, (JM, "wamid.out.jm.1", "delivered", "2022-03-31T20:15:05Z")),
    # B messages the US user (another scope than A's): BIC, B's April (Kolkata).
    # The batch also carries a status whose recipient is not a phone number: one dead letter.
    statuses(B, B1, (US, "wamid.out.us.b1", "delivered", "2022-03-31T22:00:00Z"),
                    ("12ab", "wamid.out.bad.1", "delivered", "2022-03-31T22:00:00Z")),
    # A to US2: failed only -> nothing opens.
    statuses(A, A1, (US2, "wamid.out.us2.1", "sent", "2022-03-31T22:05:00Z")),
    statuses(A, A1, (US2, "wamid.out.us2.1", "failed", "2022-03-31T22:05:09Z")),
    # A to UK: read at 22:12 arrives before sent, and no delivered ever comes -> opens at 22:12.
    statuses(A, A1, (UK, "wamid.out.uk.1", "read", "2022-03-31T22:12:00Z")),
    statuses(A, A1, (UK, "wamid.out.uk.1", "sent", "2022-03-31T22:10:00Z")),
    # A delivery of 20:20 arriving after 22:12 is late: it still opens a conversation (BIC,
    # A's March, free tier long gone) and the record says late = true.
    statuses(A, A1, (UK2, "wamid.out.uk2.1", "delivered", "2022-03-31T20:20:00Z")),
    # Next day: BR writes at 19:00; A answers exactly when the first conversation expires
    # (20:05:02, half-open) -> a new UIC in A's April (Sao Paulo), first free one.
    inbound(A, A1, BR, "wamid.in.br.2", "2022-04-01T19:00:00Z"),
    statuses(A, A1, (BR, "wamid.out.br.3", "delivered", "2022-04-01T20:05:02Z")),
    # JM: one second before expiry joins; at expiry a new BIC (April #2, free).
    statuses(A, A1, (JM, "wamid.out.jm.2", "delivered", "2022-04-01T20:15:04Z")),
    statuses(A, A1, (JM, "wamid.out.jm.3", "delivered", "2022-04-01T20:15:05Z")),
    # US writes to A at 23:00; A answers 00:30 -> UIC, April #3 -> charged.
    inbound(A, A1, US, "wamid.in.us.1", "2022-04-01T23:00:00Z"),
    statuses(A, A1, (US, "wamid.out.us.2", "delivered", "2022-04-02T00:30:00Z")),
]

def cid(pnid, user, opened):
    h = hashlib.sha256()
    for part in (pnid, user, ""):
        b = part.encode()
        h.update(struct.pack(">I", len(b)) + b)
    h.update(struct.pack(">q", opened))
    return h.hexdigest()[:32]

def rec(waba, pnid, user, origin, opened, hours, month, mid, country, market, free, rate, markup, late=False):
    o = ts(opened)
    billable = origin != "free_entry_point"
    price = Decimal(0) if (free or not billable) else Decimal(rate)
    billed = (price * (1 + Decimal(markup) / 100)).normalize()
    fmt = lambda d: "0" if d == 0 else str(d.normalize())
    return {"kind": "conversation", "conversation_id": cid(pnid, user, o), "waba_id": waba, "phone_number_id": pnid, "user": user,
            "era": "cbp-2022", "origin": origin,
            "opened_at": opened, "expires_at": datetime.fromtimestamp(o + hours * 3600, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "month": month, "opening_message_id": mid, "country": country, "market": market,
            "free_tier": free, "billable": billable, "price": fmt(price), "billed_price": fmt(billed),
            "currency": "USD", "late": late}

# Sample card 2022-02-01 (USD): UIC / BIC. North America 0.0088/0.0147, Rest of Latin
# America 0.0423/0.0706, United Kingdom 0.0388/0.0647, India 0.0040/0.0066.
expected = [
    rec(A, A1, BR, "user_initiated", "2022-03-31T20:05:02Z", 24, "2022-03", "wamid.out.br.1", "BR", "Brazil", True, "0.0300", "12.5"),
    rec(A, A1, US, "business_initiated", "2022-03-31T20:10:03Z", 24, "2022-03", "wamid.out.us.1", "US", "North America", True, "0.0147", "12.5"),
    rec(A, A1, JM, "business_initiated", "2022-03-31T20:15:05Z", 24, "2022-03", "wamid.out.jm.1", "JM", "Rest of Latin America", False, "0.0706", "12.5"),
    rec(B, B1, IN, "user_initiated", "2022-03-31T21:01:00Z", 24, "2022-04", "wamid.out.in.1", "IN", "India", True, "0.0040", "20"),
    rec(A, A1, KE, "free_entry_point", "2022-03-31T21:10:01Z", 24, "2022-03", "wamid.out.ke.1", "KE", "Rest of Africa", False, "0", "12.5"),
    rec(B, B1, US, "business_initiated", "2022-03-31T22:00:00Z", 24, "2022-04", "wamid.out.us.b1", "US", "North America", True, "0.0147", "20"),
    rec(A, A1, UK2, "business_initiated", "2022-03-31T20:20:00Z", 24, "2022-03", "wamid.out.uk2.1", "GB", "United Kingdom", False, "0.0647", "12.5", late=True),
    rec(A, A1, UK, "business_initiated", "2022-03-31T22:12:00Z", 24, "2022-03", "wamid.out.uk.1", "GB", "United Kingdom", False, "0.0647", "12.5"),
    rec(A, A1, BR, "user_initiated", "2022-04-01T20:05:02Z", 24, "2022-04", "wamid.out.br.3", "BR", "Brazil", True, "0.0300", "12.5"),
    rec(A, A1, JM, "business_initiated", "2022-04-01T20:15:05Z", 24, "2022-04", "wamid.out.jm.3", "JM", "Rest of Latin America", True, "0.0706", "12.5"),
    rec(A, A1, US, "user_initiated", "2022-04-02T00:30:00Z", 24, "2022-04", "wamid.out.us.2", "US", "North America", False, "0.0088", "12.5"),
]
expected.sort(key=lambda r: (r["opened_at"], r["conversation_id"]))

with open("input.jsonl", "w") as f:
    f.write("\n".join(lines) + "\n")
with open("expected.jsonl", "w") as f:
    for r in expected:
        f.write(json.dumps(r, separators=(",", ":")) + "\n")
# Dead letters expected: (line number, substring of the reason).
with open("expected-dead-letters.json", "w") as f:
    json.dump([[8, "not valid JSON"], [14, "12ab"]], f)
    f.write("\n")

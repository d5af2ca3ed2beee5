//! JSON lines: one record per line (docs/billing-rules.md §10: conversations and message
//! charges), fields in contract order, `kind` first.

use std::io::{self, Write};

use crate::pipeline::Billed;

pub fn write_billed(w: &mut impl Write, r: &Billed) -> io::Result<()> {
    match r {
        Billed::Conversation(c) => serde_json::to_writer(&mut *w, &c.to_out()),
        Billed::Message(m) => serde_json::to_writer(&mut *w, &m.to_out()),
    }
    .map_err(io::Error::other)?;
    w.write_all(b"\n")
}

//! JSON lines: one docs/billing-rules.md §10 record per line, fields in contract order.

use std::io::{self, Write};

use crate::pipeline::ConversationBilled;

pub fn write_billed(w: &mut impl Write, r: &ConversationBilled) -> io::Result<()> {
    serde_json::to_writer(&mut *w, &r.to_out()).map_err(io::Error::other)?;
    w.write_all(b"\n")
}

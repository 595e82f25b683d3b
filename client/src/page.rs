//! What the operator pages of the coordinator and of a node share: text made safe for
//! HTML, and ages in words.

/// How long before `now` the moment `then` was (both Unix seconds), in words.
pub fn age(now: f64, then: f64) -> String {
    let secs = (now - then).max(0.0);
    if secs < 60.0 {
        format!("{secs:.1} s ago")
    } else if secs < 3600.0 {
        format!("{:.0} min ago", secs / 60.0)
    } else if secs < 86_400.0 {
        format!("{:.1} h ago", secs / 3600.0)
    } else {
        format!("{:.1} d ago", secs / 86_400.0)
    }
}

/// `text` with the characters HTML gives meaning to replaced by entities: organisation
/// and site names are chosen by operators, reasons by the coordinator.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

//! Where in the configuration text an error is: toml reports byte spans,
//! and a user needs the dotted key and a line and column to fix the file.

/// The first key written in the file, for an error toml cannot place.
pub(super) fn first_key(text: &str) -> Option<String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))?;
    let key = line.split('=').next()?.trim();
    (!key.is_empty()).then(|| key.to_string())
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The dotted key whose name or value covers byte `offset`, if the text is
/// syntactically valid TOML.
pub(super) fn key_at(text: &str, offset: usize) -> Option<String> {
    let root = toml::de::DeTable::parse(text).ok()?;
    find_key(root.get_ref(), offset)
}

/// Tables are searched whole: a `[log]` header's span does not cover the
/// keys below it.
fn find_key(table: &toml::de::DeTable<'_>, offset: usize) -> Option<String> {
    for (key, value) in table.iter() {
        let name = key.get_ref().to_string();
        if key.span().contains(&offset) {
            return Some(name);
        }
        if let Some(inner) = value.get_ref().as_table() {
            if let Some(sub) = find_key(inner, offset) {
                return Some(format!("{name}.{sub}"));
            }
        } else if value.span().contains(&offset) {
            return Some(name);
        }
    }
    None
}

//! Spec helpers shared by several job kinds (colours, …), so that no kind module imports
//! another kind module.

/// Parses `#rrggbb` or `#rrggbbaa`.
pub fn parse_color(s: &str) -> Option<[u8; 4]> {
    let hex = s.strip_prefix('#')?;
    if !(hex.len() == 6 || hex.len() == 8) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
    Some([byte(0)?, byte(2)?, byte(4)?, if hex.len() == 8 { byte(6)? } else { 255 }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_parse() {
        assert_eq!(parse_color("#ff0080"), Some([255, 0, 128, 255]));
        assert_eq!(parse_color("#ff008040"), Some([255, 0, 128, 64]));
        for bad in ["ff0080", "#ff00", "#gg0000", "#ff00800", ""] {
            assert_eq!(parse_color(bad), None, "{bad}");
        }
    }
}

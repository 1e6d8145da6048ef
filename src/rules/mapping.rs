//! Topic templates: `{gateway}/{device}/{point}` parsed once and rendered per
//! reading without re-scanning the template.
//!
//! Owns template syntax. Validation with messages lives in
//! `config::validate::check_topic_template`; this parser assumes it passed.

enum Part {
    Lit(String),
    Gateway,
    Device,
    Point,
}

/// A parsed topic template.
pub struct TopicTemplate {
    parts: Vec<Part>,
}

impl TopicTemplate {
    /// Parses a (validated) template; unknown placeholders are kept literally.
    pub fn parse(s: &str) -> Self {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else { break };
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            parts.push(match &after[..close] {
                "gateway" => Part::Gateway,
                "device" => Part::Device,
                "point" => Part::Point,
                other => Part::Lit(format!("{{{other}}}")),
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        TopicTemplate { parts }
    }

    pub fn render(&self, gateway: &str, device: &str, point: &str) -> String {
        let mut out = String::with_capacity(64);
        for p in &self.parts {
            out.push_str(match p {
                Part::Lit(s) => s,
                Part::Gateway => gateway,
                Part::Device => device,
                Part::Point => point,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_placeholders() {
        let t = TopicTemplate::parse("site/{gateway}/{device}-{point}/v");
        assert_eq!(t.render("g", "d", "p"), "site/g/d-p/v");
        let t = TopicTemplate::parse("{gateway}/{device}/{point}");
        assert_eq!(t.render("gw", "boiler", "temp"), "gw/boiler/temp");
    }
}

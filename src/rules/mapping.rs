//! Topic templates: `{gateway}/{device}/{point}` parsed once and rendered per
//! reading without re-scanning the template.
//!
//! Owns template syntax, and how the per-device topic follows from
//! `rules.topic` ([`device_template`]). Validation with messages lives in
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

/// The template of the per-device topic (`rules.payload: per_device`):
/// the levels of `template` before the first one that holds `{point}`,
/// plus a `{device}` level when those do not name the device.
/// `{gateway}/{device}/{point}` gives `{gateway}/{device}`;
/// `site/{gateway}/{device}/{point}/v` gives `site/{gateway}/{device}`;
/// `{gateway}/{device}-{point}` gives `{gateway}/{device}`.
pub fn device_template(template: &str) -> String {
    let mut levels: Vec<&str> = template
        .split('/')
        .take_while(|l| !l.contains("{point}"))
        .collect();
    if !levels.iter().any(|l| l.contains("{device}")) {
        levels.push("{device}");
    }
    levels.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_topic_is_the_template_above_the_point() {
        for (template, device) in [
            ("{gateway}/{device}/{point}", "{gateway}/{device}"),
            (
                "site/{gateway}/{device}/{point}/v",
                "site/{gateway}/{device}",
            ),
            ("{gateway}/{device}-{point}", "{gateway}/{device}"),
            ("{gateway}/{point}/{device}", "{gateway}/{device}"),
            ("{device}/{point}", "{device}"),
            ("{point}", "{device}"),
            ("plant/{gateway}/{device}", "plant/{gateway}/{device}"),
        ] {
            assert_eq!(device_template(template), device, "{template}");
        }
    }

    #[test]
    fn renders_placeholders() {
        let t = TopicTemplate::parse("site/{gateway}/{device}-{point}/v");
        assert_eq!(t.render("g", "d", "p"), "site/g/d-p/v");
        let t = TopicTemplate::parse("{gateway}/{device}/{point}");
        assert_eq!(t.render("gw", "boiler", "temp"), "gw/boiler/temp");
    }
}

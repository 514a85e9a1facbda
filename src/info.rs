//! INFO's sections: each subsystem registers what it reports, under a
//! section name, and INFO renders the sections a client asks for. A new
//! subsystem adds its own section (or fields to an existing one) with one
//! registration in the composition root; INFO itself knows none of them.
//!
//! Nothing here reads any state: the registered closures do.

use std::fmt::{Display, Write as _};

/// Writes one section's `field:value` lines.
pub struct InfoWriter<'a> {
    out: &'a mut String,
}

impl InfoWriter<'_> {
    pub fn field(&mut self, name: &str, value: impl Display) {
        // Writing to a String cannot fail.
        let _ = write!(self.out, "{name}:{value}\r\n");
    }
}

/// A contributor's fields, read from the context `C` INFO runs in or
/// from what it captured.
type Fields<C> = Box<dyn Fn(&C, &mut InfoWriter<'_>) + Send + Sync>;

struct Section<C> {
    /// Lowercase, as clients ask for it (`INFO memory`).
    name: &'static str,
    /// As Redis prints it (`# Memory`).
    title: &'static str,
    /// Its fields, from every subsystem that reports here, in the order
    /// they registered.
    fields: Vec<Fields<C>>,
}

/// The sections INFO can render, in the order INFO prints them.
pub struct InfoRegistry<C> {
    sections: Vec<Section<C>>,
}

impl<C> Default for InfoRegistry<C> {
    fn default() -> Self {
        Self {
            sections: Vec::new(),
        }
    }
}

impl<C> InfoRegistry<C> {
    /// Adds `fields` to section `name` (created, after the ones registered
    /// so far, the first time).
    pub fn register(
        &mut self,
        name: &'static str,
        title: &'static str,
        fields: impl Fn(&C, &mut InfoWriter<'_>) + Send + Sync + 'static,
    ) {
        let fields: Fields<C> = Box::new(fields);
        match self.sections.iter_mut().find(|s| s.name == name) {
            Some(section) => section.fields.push(fields),
            None => self.sections.push(Section {
                name,
                title,
                fields: vec![fields],
            }),
        }
    }

    /// The text of INFO `requested` (lowercase section names): every
    /// section when none is named or one is `all`, `default` or
    /// `everything`; names that match no section add nothing, as in Redis.
    pub fn render(&self, context: &C, requested: &[String]) -> String {
        let all = requested.is_empty()
            || requested
                .iter()
                .any(|s| s == "all" || s == "default" || s == "everything");
        let mut out = String::new();
        for section in &self.sections {
            if !all && !requested.iter().any(|r| r == section.name) {
                continue;
            }
            if !out.is_empty() {
                out.push_str("\r\n");
            }
            out.push_str("# ");
            out.push_str(section.title);
            out.push_str("\r\n");
            let mut writer = InfoWriter { out: &mut out };
            for fields in &section.fields {
                fields(context, &mut writer);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_render_in_registration_order_with_every_contributor() {
        let mut info = InfoRegistry::<u32>::default();
        info.register("server", "Server", |n, w| w.field("a", n));
        info.register("stats", "Stats", |_, w| w.field("b", "two"));
        info.register("server", "Server", |_, w| w.field("c", 3.5));
        assert_eq!(
            info.render(&1, &[]),
            "# Server\r\na:1\r\nc:3.5\r\n\r\n# Stats\r\nb:two\r\n"
        );
        assert_eq!(info.render(&1, &["stats".into()]), "# Stats\r\nb:two\r\n");
        assert_eq!(info.render(&1, &["nosuch".into()]), "");
        assert_eq!(info.render(&1, &["all".into()]), info.render(&1, &[]));
    }
}

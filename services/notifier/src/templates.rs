//! Email templates (text and HTML files under `templates/`, rendered with minijinja). The files
//! are compiled into the binary so a deployment cannot lose them; HTML is auto-escaped.

use minijinja::Environment;
use serde::Serialize;
use std::sync::OnceLock;

#[derive(Debug, thiserror::Error)]
#[error("template {name} failed to render: {source}")]
pub struct TemplateError {
    name: String,
    source: minijinja::Error,
}

/// A template that does not render is our bug, not the message's: retrying changes nothing, so
/// the message becomes a dead letter (and a person hears of it).
impl From<TemplateError> for platform::amqp::HandlerError {
    fn from(error: TemplateError) -> Self {
        Self::Permanent(error.to_string())
    }
}

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // Only HTML files are escaped; the text versions stay readable.
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                minijinja::AutoEscape::Html
            } else {
                minijinja::AutoEscape::None
            }
        });
        for (name, source) in TEMPLATES {
            // The templates are ours and checked by the tests; a broken one is caught there.
            if let Err(error) = env.add_template(name, source) {
                tracing::error!(name, %error, "template does not parse");
            }
        }
        env
    })
}

/// Every template name `X` has `templates/X.txt` and `templates/X.html`.
macro_rules! pairs {
    ($($name:literal),* $(,)?) => {
        [$(
            (concat!($name, ".txt"), include_str!(concat!("../templates/", $name, ".txt"))),
            (concat!($name, ".html"), include_str!(concat!("../templates/", $name, ".html"))),
        )*]
    };
}

const TEMPLATES: [(&str, &str); 16] = pairs![
    "dead_letter_alert",
    "visitor_access_resident",
    "visitor_access_visitor",
    "facility_access_resident",
    "manager_action",
    "system_health",
    "undeliverable",
    "salto_drift",
];

/// Renders `<name>.txt` and `<name>.html` with the same context.
pub fn render_pair(
    name: &str,
    context: &impl Serialize,
) -> Result<(String, String), TemplateError> {
    let render = |file: String| {
        environment()
            .get_template(&file)
            .and_then(|t| t.render(minijinja::value::Serde(context)))
            .map_err(|source| TemplateError {
                name: file.clone(),
                source,
            })
    };
    Ok((
        render(format!("{name}.txt"))?,
        render(format!("{name}.html"))?,
    ))
}
